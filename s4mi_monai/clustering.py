"""k-means in torch, on the device where the features lie: full-batch Lloyd and PiCIE's mini-batch k-means.

PiCIE (Cho et al. 2021) clusters every pixel feature of the training set once per epoch with faiss. faiss is
not available here, so this module does the same in torch (methods.md section 8):

* :func:`lloyd_kmeans`: ``n_iter`` Lloyd iterations from k-means++ (default) or from ``K`` distinct random
  points (faiss' initialisation), stopping early once no assignment changes;
* :class:`MiniBatchKMeans`: the reference ``run_mini_batch_kmeans``: the features of the first
  ``init_batches`` batches are clustered by :func:`lloyd_kmeans`, their assignment counts start the
  cumulative counts ``N_k``, and every later batch moves each centroid towards the mean of the batch
  features assigned to it::

      N_k ← N_k + n_k,   η_k = n_k / N_k,   μ_k ← (1 − η_k) μ_k + η_k · mean(batch features assigned to k)

All arithmetic is float32 whatever the features' dtype (bf16 features under autocast are upcast), and every
random draw comes from a CPU ``torch.Generator``, so a seed fixes the result on any device.

Under torchrun, :class:`MiniBatchKMeans` with ``across_ranks`` clusters the union of every rank's batches: the
initial points are gathered from all ranks and clustered alike on each, and every online step adds up the
ranks' per-cluster sums and counts, so that all ranks hold the same centroids, equal to one process clustering
batches ``world size`` times as large.

Empty clusters: Lloyd gives a cluster that lost all its points the points farthest from their own centroids
(scikit-learn's rule), so all ``K`` clusters stay in use; an online batch leaves the centroids it does not
reach unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from s4mi_monai import distributed

__all__ = [
    "INIT_METHODS",
    "KMeansResult",
    "MiniBatchKMeans",
    "assign_to_centroids",
    "init_centroids",
    "lloyd_kmeans",
    "squared_distances",
]

INIT_METHODS = ("k-means++", "random")


@dataclass
class KMeansResult:
    """Centroids (K, D), the assignment (N,) of the clustered points, their summed squared distances, iterations run."""

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: float
    n_iter: int


def _as_points(features: torch.Tensor) -> torch.Tensor:
    if features.ndim != 2:
        raise ValueError(f"k-means needs (N, D) points, got shape {tuple(features.shape)}")
    return features.float()


def squared_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, K) ``‖x − μ_k‖²`` in float32, by ``‖x‖² − 2⟨x, μ_k⟩ + ‖μ_k‖²`` (clamped at 0 against rounding)."""
    points, centroids = points.float(), centroids.float()
    cross = points @ centroids.T
    return (points.square().sum(dim=1, keepdim=True) - 2 * cross + centroids.square().sum(dim=1)).clamp(min=0)


def assign_to_centroids(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid (N,) of each point and its squared distance (N,)."""
    distances, labels = squared_distances(points, centroids).min(dim=1)
    return labels, distances


def _draw_index(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One index drawn with probability proportional to ``weights`` (uniformly when they are all 0)."""
    weights = weights.detach().double().cpu()
    if not weights.sum() > 0:
        weights = torch.ones_like(weights)
    return int(torch.multinomial(weights, 1, generator=generator))


def init_centroids(
    features: torch.Tensor, n_clusters: int, method: str = "k-means++", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Initial (K, D) float32 centroids chosen among the points.

    ``"k-means++"`` (Arthur and Vassilvitskii 2007): the first centroid uniformly, each next one with
    probability proportional to the squared distance to the nearest centroid so far. ``"random"``: ``K``
    distinct points uniformly, as faiss (the PiCIE reference). ``generator`` must be a CPU generator.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {method!r}")
    points = _as_points(features)
    if points.shape[0] < n_clusters:
        raise ValueError(f"k-means with {n_clusters} clusters needs at least {n_clusters} points, got {points.shape[0]}")
    if method == "random":
        chosen = torch.randperm(points.shape[0], generator=generator)[:n_clusters]
        return points[chosen.to(points.device)].clone()
    centroids = [points[_draw_index(torch.ones(points.shape[0]), generator)]]
    closest = squared_distances(points, centroids[0][None])[:, 0]
    for _ in range(1, n_clusters):
        centroids.append(points[_draw_index(closest, generator)])
        closest = torch.minimum(closest, squared_distances(points, centroids[-1][None])[:, 0])
    return torch.stack(centroids).clone()


def _means_of_clusters(points: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums (K, D) and counts (K,) in float32."""
    sums = torch.zeros(n_clusters, points.shape[1], dtype=torch.float32, device=points.device).index_add_(0, labels, points)
    counts = torch.bincount(labels, minlength=n_clusters).to(torch.float32)
    return sums, counts


def lloyd_kmeans(
    features: torch.Tensor,
    n_clusters: int,
    n_iter: int = 20,
    init: str | torch.Tensor = "k-means++",
    generator: torch.Generator | None = None,
) -> KMeansResult:
    """Full-batch k-means of (N, D) ``features``: at most ``n_iter`` Lloyd iterations (assign, then move each
    centroid to its points' mean), stopping once the assignment no longer changes.

    ``init`` is a method of :data:`INIT_METHODS` or (K, D) initial centroids. The returned labels and inertia
    are those of the returned centroids (one last assignment), as scikit-learn's ``KMeans``.
    """
    points = _as_points(features)
    centroids = init.to(points).clone() if isinstance(init, torch.Tensor) else init_centroids(points, n_clusters, init, generator)
    if centroids.shape != (n_clusters, points.shape[1]):
        raise ValueError(f"initial centroids must have shape {(n_clusters, points.shape[1])}, got {tuple(centroids.shape)}")
    labels, distances = assign_to_centroids(points, centroids)
    iterations = 0
    while iterations < n_iter:
        iterations += 1
        sums, counts = _means_of_clusters(points, labels, n_clusters)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            farthest = distances.topk(empty.numel()).indices
            centroids[empty] = points[farthest]
        new_labels, distances = assign_to_centroids(points, centroids)
        converged = bool(torch.equal(new_labels, labels)) and not empty.numel()
        labels = new_labels
        if converged:
            break
    return KMeansResult(centroids, labels, float(distances.sum()), iterations)


class MiniBatchKMeans:
    """PiCIE's mini-batch k-means over a stream of feature batches (update rule in the module docstring).

    Call :meth:`partial_fit` with the (N, D) features of every batch, then read :attr:`centroids` and
    :attr:`counts` (``N_k``: the points each centroid absorbed, the initial ones included). A stream shorter
    than ``init_batches`` is clustered when :meth:`finish` is called. ``generator`` (CPU) seeds the
    initialisation. ``across_ranks``: every rank of a torchrun run calls it on its own share of the stream, and
    all hold the same result (module docstring); a no-op outside a distributed run.
    """

    def __init__(
        self,
        n_clusters: int,
        init_batches: int = 20,
        n_iter: int = 20,
        init: str = "k-means++",
        generator: torch.Generator | None = None,
        across_ranks: bool = False,
    ) -> None:
        if n_clusters < 1 or init_batches < 1:
            raise ValueError(f"n_clusters and init_batches must be positive, got {n_clusters} and {init_batches}")
        if init not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
        self.n_clusters = n_clusters
        self.init_batches = init_batches
        self.n_iter = n_iter
        self.init = init
        self.generator = generator
        self.across_ranks = across_ranks
        self.centroids: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.total_squared_distance = 0.0
        self.n_points = 0
        self._pending: list[torch.Tensor] = []

    @property
    def initialised(self) -> bool:
        return self.centroids is not None

    def partial_fit(self, features: torch.Tensor) -> None:
        """Buffer the batch until ``init_batches`` are there and initialise, or update the centroids online."""
        points = _as_points(features)
        if not self.initialised:
            self._pending.append(points)
            if len(self._pending) == self.init_batches:
                self._initialise()
            return
        labels, distances = assign_to_centroids(points, self.centroids)
        sums, counts = _means_of_clusters(points, labels, self.n_clusters)
        if self.across_ranks:
            sums, counts = distributed.sum_over_ranks(sums), distributed.sum_over_ranks(counts)
        self.counts += counts
        rates = torch.where(counts > 0, counts / self.counts.clamp(min=1), torch.zeros_like(counts))
        batch_means = sums / counts.clamp(min=1)[:, None]
        self.centroids = (1 - rates[:, None]) * self.centroids + rates[:, None] * batch_means
        self._add_distances(distances, local=True)

    def finish(self) -> MiniBatchKMeans:
        """Initialise from the buffered batches if the stream was shorter than ``init_batches``."""
        if not self.initialised:
            if not self._pending:
                raise ValueError("MiniBatchKMeans saw no features")
            self._initialise()
        return self

    @property
    def mean_squared_distance(self) -> float:
        """Mean squared distance of every point to its centroid at the time it was assigned (the reference's k-means loss)."""
        return self.total_squared_distance / max(self.n_points, 1)

    def _initialise(self) -> None:
        points = torch.cat(self._pending)
        if self.across_ranks:
            points = distributed.gather_rows(points)
        self._pending = []
        result = lloyd_kmeans(points, self.n_clusters, self.n_iter, self.init, self.generator)
        self.centroids = result.centroids
        self.counts = torch.bincount(result.labels, minlength=self.n_clusters).to(torch.float32)
        self._add_distances(squared_distances(points, result.centroids).gather(1, result.labels[:, None]), local=False)

    def _add_distances(self, distances: torch.Tensor, local: bool) -> None:
        """Count ``distances``: this rank's points only (``local``, summed over ranks with ``across_ranks``) or all."""
        total = torch.stack([distances.sum().double(), torch.tensor(float(distances.numel()), dtype=torch.float64, device=distances.device)])
        if self.across_ranks and local:
            total = distributed.sum_over_ranks(total)
        self.total_squared_distance += float(total[0])
        self.n_points += int(total[1])
