"""Speed of the torch mini-batch k-means of s4mi_monai against faiss-cpu on the same features (K = 2, 128-d).

faiss is not a dependency; to run this: pip install faiss-cpu, then
    OMP_NUM_THREADS=2 python docs/studies/kmeans_vs_faiss.py
"""
import time
import torch
import faiss
from s4mi_monai.clustering import MiniBatchKMeans, lloyd_kmeans

torch.manual_seed(0)
n, d, k = 400_000, 128, 2
centres = torch.nn.functional.normalize(torch.randn(k, d), dim=1)
features = torch.nn.functional.normalize(centres[torch.randint(0, k, (n,))] + 0.8 * torch.randn(n, d) / d**0.5, dim=1)
threads = torch.get_num_threads()
faiss.omp_set_num_threads(threads)
batches = features.split(16 * 256)  # PiCIE-like batches: 16 images of 16x16 embeddings

def inertia(points, c):
    return float(torch.cdist(points, c).pow(2).min(dim=1).values.sum()) / len(points)

t = time.perf_counter(); km = MiniBatchKMeans(k, init_batches=20, n_iter=20, generator=torch.Generator().manual_seed(0))
for b in batches: km.partial_fit(b)
km.finish(); torch_mb = time.perf_counter() - t
t = time.perf_counter(); full = lloyd_kmeans(features, k, n_iter=20, generator=torch.Generator().manual_seed(0)); torch_full = time.perf_counter() - t
x = features.numpy()
t = time.perf_counter(); fk = faiss.Kmeans(d, k, niter=20, seed=0, max_points_per_centroid=10**7); fk.train(x); faiss_full = time.perf_counter() - t
print(f"threads {threads}, {n} points x {d} dims, K={k}")
print(f"torch mini-batch (init 20 batches, 20 Lloyd steps, online updates): {torch_mb:.2f} s, {n/torch_mb/1e6:.2f} M px/s, inertia {inertia(features, km.centroids):.5f}")
print(f"torch full Lloyd, 20 steps: {torch_full:.2f} s, {n/torch_full/1e6:.2f} M px/s, inertia {inertia(features, full.centroids):.5f}")
print(f"faiss-cpu Kmeans, 20 steps: {faiss_full:.2f} s, {n/faiss_full/1e6:.2f} M px/s, inertia {inertia(features, torch.as_tensor(fk.centroids)):.5f}")
