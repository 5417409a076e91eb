"""Speed of the torch k-means of s4mi_monai against faiss-cpu on the same features (K = 2, 128-d, unit norm).

faiss is not a dependency; to run this: ``pip install faiss-cpu``, then
``OMP_NUM_THREADS=2 python docs/studies/kmeans_vs_faiss.py``. It prints seconds, million pixels per second and the
inertia (mean squared distance to the nearest centroid) of each, on 400,000 PiCIE-like pixel embeddings.
"""

import time

import faiss
import torch

from s4mi_monai.clustering import MiniBatchKMeans, lloyd_kmeans

N_PIXELS, DIMS, K, ITERATIONS = 400_000, 128, 2, 20


def inertia(points: torch.Tensor, centroids: torch.Tensor) -> float:
    return float(torch.cdist(points, centroids).pow(2).min(dim=1).values.mean())


def timed(fit):
    started = time.perf_counter()
    centroids = fit()
    return time.perf_counter() - started, centroids


def main() -> None:
    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(K, DIMS), dim=1)
    noisy = centres[torch.randint(0, K, (N_PIXELS,))] + 0.8 * torch.randn(N_PIXELS, DIMS) / DIMS**0.5
    features = torch.nn.functional.normalize(noisy, dim=1)
    faiss.omp_set_num_threads(torch.get_num_threads())

    def mini_batch() -> torch.Tensor:
        kmeans = MiniBatchKMeans(K, init_batches=20, n_iter=ITERATIONS, generator=torch.Generator().manual_seed(0))
        for batch in features.split(16 * 256):  # batches of 16 images of 16 x 16 embeddings
            kmeans.partial_fit(batch)
        return kmeans.finish().centroids

    def full() -> torch.Tensor:
        return lloyd_kmeans(features, K, n_iter=ITERATIONS, generator=torch.Generator().manual_seed(0)).centroids

    def with_faiss() -> torch.Tensor:
        kmeans = faiss.Kmeans(DIMS, K, niter=ITERATIONS, seed=0, max_points_per_centroid=10**7)
        kmeans.train(features.numpy())
        return torch.as_tensor(kmeans.centroids)

    print(f"{torch.get_num_threads()} threads, {N_PIXELS} pixels x {DIMS} dims, K = {K}, {ITERATIONS} Lloyd steps")
    for name, fit in (("torch mini-batch (PiCIEClustering)", mini_batch), ("torch full Lloyd", full), ("faiss-cpu Kmeans", with_faiss)):
        seconds, centroids = timed(fit)
        print(f"{name:<36} {seconds:6.2f} s  {N_PIXELS / seconds / 1e6:5.2f} M px/s  inertia {inertia(features, centroids):.5f}")


if __name__ == "__main__":
    main()
