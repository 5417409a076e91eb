"""PiCIE: k-means, the two-view equivariance, the loss, the cluster-matching evaluation, the floors and the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from sklearn.cluster import KMeans
from torch import nn
from torch.utils.data import DataLoader

from s4mi_monai.clustering import MiniBatchKMeans, init_centroids, lloyd_kmeans
from s4mi_monai.engines import PiCIETrainer
from s4mi_monai.handlers import PiCIEClustering
from s4mi_monai.losses import PiCIELoss, cluster_weights
from s4mi_monai.metrics import (
    apply_cluster_mapping,
    cluster_mapping,
    clustering_scores,
    confusion_histogram,
    kmeans_colour_segmentation,
    otsu_segmentation,
    otsu_threshold,
)
from s4mi_monai.metrics.segmentation import UNMATCHED
from s4mi_monai.networks import PiCIENet, PiCIESegmenter, ResNetUNet
from s4mi_monai.transforms import PiCIEViews


def _blobs(n_per_cluster: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -1.0], [3.0, 3.0, 3.0]])
    return np.concatenate([centre + rng.normal(scale=0.7, size=(n_per_cluster, 3)) for centre in centres]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# k-means


def test_lloyd_matches_sklearn_from_the_same_start_and_from_its_own_init():
    points = _blobs()
    start = points[[0, 1, 2, 3]]  # four points of the first blob: a poor start that Lloyd must walk away from
    ours = lloyd_kmeans(torch.from_numpy(points), 4, n_iter=100, init=torch.from_numpy(start))
    theirs = KMeans(4, init=start, n_init=1, max_iter=100, tol=0.0, algorithm="lloyd").fit(points)
    assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-4)
    best = KMeans(4, n_init=10, random_state=0).fit(points).inertia_
    for method in ("k-means++", "random"):
        seeded = lloyd_kmeans(torch.from_numpy(points), 4, n_iter=50, init=method, generator=torch.Generator().manual_seed(3))
        assert seeded.inertia == pytest.approx(best, rel=1e-3)
        assert seeded.inertia == pytest.approx(float(((points - seeded.centroids[seeded.labels].numpy()) ** 2).sum()), rel=1e-5)


def test_kmeans_is_deterministic_given_the_generator_and_keeps_every_cluster():
    points = torch.from_numpy(_blobs())
    first = init_centroids(points, 4, generator=torch.Generator().manual_seed(7))
    again = init_centroids(points, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    # a centroid far from every point loses them all at the first step and must be given new ones
    start = torch.cat([points[:3], torch.full((1, 3), 100.0)])
    result = lloyd_kmeans(points, 4, n_iter=50, init=start)
    assert torch.bincount(result.labels, minlength=4).min() > 0


def test_mini_batch_kmeans_follows_the_online_rule_and_is_close_to_full_batch():
    points = torch.from_numpy(_blobs(seed=1))
    batches = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(0))].split(40)
    online = MiniBatchKMeans(4, init_batches=2, n_iter=20, generator=torch.Generator().manual_seed(0))
    online.partial_fit(batches[0].to(torch.bfloat16))
    online.partial_fit(batches[1])
    assert online.centroids.dtype == torch.float32 and online.counts.sum() == 80
    before, counts_before = online.centroids.clone(), online.counts.clone()
    online.partial_fit(batches[2])
    labels = torch.cdist(batches[2], before).argmin(dim=1)
    for k in range(4):
        n_k = int((labels == k).sum())
        if n_k:
            rate = n_k / (counts_before[k] + n_k)
            expected = (1 - rate) * before[k] + rate * batches[2][labels == k].mean(dim=0)
            torch.testing.assert_close(online.centroids[k], expected)
    for batch in batches[3:]:
        online.partial_fit(batch)
    assert online.counts.sum() == len(points)
    full = lloyd_kmeans(points, 4, n_iter=50, generator=torch.Generator().manual_seed(0))
    online_inertia = float(torch.cdist(points, online.centroids).min(dim=1).values.square().sum())
    assert online_inertia <= 1.05 * full.inertia


def test_short_streams_are_clustered_when_finished():
    points = torch.from_numpy(_blobs())
    kmeans = MiniBatchKMeans(4, init_batches=20, generator=torch.Generator().manual_seed(0))
    kmeans.partial_fit(points)
    assert not kmeans.initialised
    assert kmeans.finish().centroids.shape == (4, 3)


# ---------------------------------------------------------------------------------------------
# views and equivariance


def test_geometric_transform_commutes_with_a_pointwise_network():
    """With a network acting on each pixel alone (and output stride 1), G on the input equals G on the output."""
    pointwise = nn.Conv2d(3, 5, kernel_size=1)
    views = PiCIEViews(min_scale=0.3, jitter_prob=0.0, blur_prob=0.0, grayscale_prob=0.0, seed=4)
    images = torch.rand(6, 3, 32, 32)
    indices = torch.arange(6)
    view1, view2, parameters = views.view_inputs(images, indices)
    assert parameters.flips.any() and not parameters.flips.all()
    torch.testing.assert_close(view2, images)
    with torch.no_grad():
        z1 = pointwise(view1)
        z2 = views.align_features(pointwise(view2), parameters, (32, 32), tuple(z1.shape[-2:]))
    torch.testing.assert_close(z1, z2, atol=1e-5, rtol=1e-5)


def test_views_are_fixed_per_epoch_and_image_and_change_with_the_epoch():
    views = PiCIEViews(input_size=24, seed=1)
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    first, second, _ = views.view_inputs(images, torch.tensor([0, 1, 2, 3]))
    assert first.shape == second.shape == (4, 3, 24, 24)
    reordered, _, _ = views.view_inputs(images.flip(0), torch.tensor([3, 2, 1, 0]))
    torch.testing.assert_close(reordered.flip(0), first)
    views.reshuffle(2)
    assert not torch.allclose(views.view_inputs(images, torch.arange(4))[0], first)
    photometric_off = PiCIEViews(grayscale_input=True, jitter_prob=0.0, blur_prob=0.0, grayscale_prob=0.0)
    gray = photometric_off.view_inputs(images, torch.arange(4))[1]
    torch.testing.assert_close(gray[:, 0], gray[:, 1])


def test_picie_net_shapes_unit_norm_and_encoder_for_the_unet():
    network = PiCIENet("resnet18").eval()
    with torch.no_grad():
        z = network(torch.rand(2, 3, 64, 48))
        z_last = network(torch.rand(2, 3, 64, 48).contiguous(memory_format=torch.channels_last))
    assert z.shape == (2, 128, 16, 12) and z_last.shape == z.shape
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2, 16, 12))
    unet = ResNetUNet(encoder="resnet18")
    result = unet.load_state_dict(network.encoder_state_dict(), strict=False)
    assert not result.unexpected_keys
    assert not [key for key in result.missing_keys if key.startswith("encoder.")]
    torch.testing.assert_close(unet.encoder.conv1.weight, network.encoder.conv1.weight)


# ---------------------------------------------------------------------------------------------
# loss


def _weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Σ_i w_{y_i} (−log softmax(logits_i)_{y_i}) / Σ_i w_{y_i}, pixel by pixel."""
    log_probabilities = logits.log_softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    flat = labels.reshape(-1)
    pixel_weights = torch.ones(len(flat)) if weights is None else weights[flat]
    return -(pixel_weights * log_probabilities[torch.arange(len(flat)), flat]).sum() / pixel_weights.sum()


@pytest.mark.parametrize("weighting", ["frequency", "inverse_frequency", "none"])
def test_picie_loss_equals_the_hand_computation(weighting: str):
    generator = torch.Generator().manual_seed(0)
    z1 = F.normalize(torch.randn(2, 4, 3, 3, generator=generator), dim=1)
    z2 = F.normalize(torch.randn(2, 4, 3, 3, generator=generator), dim=1)
    mu1, mu2 = (0.8 * F.normalize(torch.randn(3, 4, generator=generator), dim=1) for _ in range(2))
    counts1, counts2 = torch.tensor([60.0, 30.0, 10.0]), torch.tensor([5.0, 80.0, 15.0])
    terms = PiCIELoss(weighting)(z1, z2, mu1, mu2, counts1, counts2)

    def labels(z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        pixels = z.permute(0, 2, 3, 1).reshape(-1, 4)
        return ((pixels[:, None] - mu[None]) ** 2).sum(-1).argmin(dim=1).reshape(2, 3, 3)

    def logits(z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        return torch.stack([(z * mu[k].view(1, 4, 1, 1)).sum(dim=1) for k in range(len(mu))], dim=1)

    if weighting == "frequency":
        w1, w2 = counts1 / 100, counts2 / 100
    elif weighting == "inverse_frequency":
        w1 = torch.tensor([100 / 60, 100 / 30, 100 / 10])
        w2 = torch.tensor([100 / 5, 100 / 80, 100 / 15])
        w1, w2 = 3 * w1 / w1.sum(), 3 * w2 / w2.sum()
    else:
        w1 = w2 = None
    y1, y2 = labels(z1, mu1), labels(z2, mu2)
    assert len(y1.unique()) == len(y2.unique()) == 3, "every cluster must hold pixels, or the weights would not matter"
    within = 0.5 * (_weighted_ce(logits(z1, mu1), y1, w1) + _weighted_ce(logits(z2, mu2), y2, w2))
    cross = 0.5 * (_weighted_ce(logits(z1, mu2), y2, w2) + _weighted_ce(logits(z2, mu1), y1, w1))
    torch.testing.assert_close(terms["within_view"], within)
    torch.testing.assert_close(terms["cross_view"], cross)
    torch.testing.assert_close(terms["loss"], 0.5 * (within + cross))


def test_cluster_weights_of_an_empty_cluster():
    torch.testing.assert_close(cluster_weights(torch.tensor([3.0, 1.0, 0.0]), "frequency"), torch.tensor([0.75, 0.25, 0.0]))
    torch.testing.assert_close(cluster_weights(torch.tensor([3.0, 1.0, 0.0]), "inverse_frequency"), torch.tensor([0.5, 1.5, 0.0]))
    assert cluster_weights(None, "none") is None


# ---------------------------------------------------------------------------------------------
# evaluation and floors


def test_hungarian_matching_of_permuted_clusters():
    histogram = np.array([[5, 90], [70, 10]])  # cluster 1 is the background, cluster 0 the lesion
    mapping = cluster_mapping(histogram)
    assert mapping == {0: 1, 1: 0}
    scores = clustering_scores(histogram, mapping)
    assert scores["pixel_accuracy"] == pytest.approx(160 / 175)
    assert scores["iou_all_classes"] == pytest.approx({"0": 90 / 105, "1": 70 / 85})
    assert scores["miou_all_classes"] == pytest.approx((90 / 105 + 70 / 85) / 2)


def test_more_clusters_than_classes_one_to_one_and_many_to_one():
    histogram = np.array([[50, 40, 0, 5], [0, 10, 30, 20]])
    hungarian = cluster_mapping(histogram, "hungarian")
    assert hungarian == {0: 0, 1: UNMATCHED, 2: 1, 3: UNMATCHED}
    scores = clustering_scores(histogram, hungarian)
    assert scores["pixel_accuracy"] == pytest.approx(80 / 155)
    assert scores["iou_all_classes"]["0"] == pytest.approx(50 / 95)  # 45 of its pixels lie in unmatched clusters
    majority = cluster_mapping(histogram, "majority")
    assert majority == {0: 0, 1: 0, 2: 1, 3: 1}
    scores = clustering_scores(histogram, majority)
    assert scores["pixel_accuracy"] == pytest.approx(140 / 155)
    assert scores["iou_all_classes"] == pytest.approx({"0": 90 / 105, "1": 50 / 65})


def test_confusion_histogram_ignores_labels_outside_the_classes_and_mapping_applies_to_maps():
    clusters = [np.array([[0, 1], [1, 2]]), torch.tensor([[2, 2], [0, 1]])]
    targets = [np.array([[1, 0], [0, 255]]), np.array([[0, 1], [-1, 0]])]
    histogram = confusion_histogram(clusters, targets, n_clusters=3)
    np.testing.assert_array_equal(histogram, [[0, 3, 1], [1, 0, 1]])
    mapped = apply_cluster_mapping(clusters[1], {"0": 1, "1": 0, "2": UNMATCHED})
    assert isinstance(mapped, torch.Tensor)
    assert mapped.tolist() == [[UNMATCHED, UNMATCHED], [1, 0]]
    with pytest.raises(ValueError, match="does not cover"):
        apply_cluster_mapping(clusters[0], {0: 0, 1: 1})


def test_otsu_separates_a_bimodal_image_and_the_lesion_side_is_the_darker_one():
    rng = np.random.default_rng(0)
    lesion = np.zeros((40, 40), dtype=bool)
    lesion[10:25, 12:30] = True
    gray = np.where(lesion, rng.normal(0.25, 0.04, lesion.shape), rng.normal(0.7, 0.04, lesion.shape)).clip(0, 1)
    assert 0.35 < otsu_threshold(gray) < 0.6
    rgb = np.stack([gray] * 3)
    np.testing.assert_array_equal(otsu_segmentation(rgb), lesion)
    np.testing.assert_array_equal(otsu_segmentation(torch.from_numpy(rgb), lesion="brighter"), ~lesion)
    np.testing.assert_array_equal(kmeans_colour_segmentation((rgb * 255).astype(np.uint8)), lesion)
    assert not otsu_segmentation(np.full((5, 5), 0.3)).any()


# ---------------------------------------------------------------------------------------------
# trainer


def _picie_run(seed: int = 0, n_clusters: int = 2) -> tuple[list[float], PiCIETrainer]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    items = [{"image": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=generator), "index": i} for i in range(4)]
    network = PiCIENet("resnet18")
    trainer = PiCIETrainer(
        "cpu",
        1,
        DataLoader(items, batch_size=2),
        network,
        torch.optim.Adam(network.parameters(), lr=1e-4),
        views=PiCIEViews(seed=seed),
        channels_last=True,
        train_handlers=[PiCIEClustering(n_clusters, init_batches=1, n_iter=5, seed=seed)],
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(float(engine.state.output["loss"])))
    trainer.run()
    return losses, trainer


def test_picie_trainer_clusters_then_trains_and_repeats_under_the_same_seed():
    losses, trainer = _picie_run()
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    centroids1, centroids2 = trainer.state.centroids
    assert centroids1.shape == centroids2.shape == (2, 128)
    for frequencies in trainer.state.cluster_frequencies:
        assert frequencies.sum() == pytest.approx(1.0)
    assert trainer.state.metrics["kmeans_distance_view1"] >= 0
    smallest = min(float(frequencies.min()) for frequencies in trainer.state.cluster_frequencies)
    assert trainer.state.metrics["smallest_cluster_share"] == pytest.approx(smallest)
    again, _ = _picie_run()
    assert again == losses


# --- the trained model as a segmentation network ----------------------------------------------------------------


def _segmenter(n_clusters: int = 2, **kwargs) -> PiCIESegmenter:
    torch.manual_seed(0)
    return PiCIESegmenter(PiCIENet("resnet18"), n_clusters=n_clusters, **kwargs)


def test_segmenter_class_scores_argmax_is_the_matched_cluster_map():
    segmenter = _segmenter(n_clusters=3).eval()
    segmenter.set_clusters(F.normalize(torch.randn(3, 128), dim=1), [1, 0, -1])  # cluster 2 unmatched: background
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        clusters = segmenter.cluster_scores(images).argmax(dim=1)
        classes = segmenter(images)
    assert classes.shape == (2, 2, 32, 32)
    expected = torch.tensor([1, 0, 0])[clusters]
    assert torch.equal(classes.argmax(dim=1), expected)
    segmenter.return_clusters = True
    assert torch.equal(segmenter(images).argmax(dim=1), clusters)
    restored = _segmenter(n_clusters=3)
    restored.load_state_dict(segmenter.state_dict())  # centroids and matching travel in model.pt
    assert torch.equal(restored.cluster_to_class, torch.tensor([1, 0, 0]))


def test_final_clustering_and_matching_recover_a_swapped_cluster_order():
    from s4mi_monai.engines import fit_final_centroids, match_clusters

    segmenter = _segmenter(n_clusters=2)
    images = torch.rand(4, 3, 32, 32)
    batches = [{"image": images[:2]}, {"image": images[2:]}]
    centroids = fit_final_centroids(segmenter, batches, init_batches=1, n_iter=5, seed=0)
    assert centroids.shape == (2, 128) and torch.equal(segmenter.centroids, centroids)
    with torch.no_grad():
        clusters = segmenter.cluster_scores(images).argmax(dim=1)
    masks = (1 - clusters).unsqueeze(1)  # ground truth = the clusters with their numbers swapped
    labeled = [{"image": images[:2], "label": masks[:2]}, {"image": images[2:], "label": masks[2:]}]
    mapping, scores = match_clusters(segmenter, labeled)
    assert mapping == {0: 1, 1: 0} and scores["pixel_accuracy"] == 1.0 and scores["miou_all_classes"] == 1.0
    with torch.no_grad():
        assert torch.equal(segmenter(images).argmax(dim=1, keepdim=True), masks)


def test_cluster_map_writer_saves_the_clusters_and_the_matching_gives_the_class_mask(tmp_path):
    from monai.data import MetaTensor
    from PIL import Image

    from s4mi_monai.transforms import ClustersToClassesd, SaveClusterMapd

    Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(tmp_path / "new.png")
    clusters = MetaTensor(torch.tensor([[0, 1, 2, 2, 1, 0]] * 4).T.unsqueeze(0), meta={"filename_or_obj": str(tmp_path / "new.png")})
    kept = SaveClusterMapd("pred", str(tmp_path / "out"), num_clusters=3)({"pred": clusters})["pred"]
    assert torch.equal(kept, clusters)  # the writer only writes; the mapping is its own step
    out = ClustersToClassesd("pred", {"0": 1, "1": 0, "2": -1})({"pred": kept})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"].endswith("new.png")
    assert torch.equal(out.as_tensor(), torch.tensor([[1, 0, 0, 0, 0, 1]] * 4).T.unsqueeze(0))
    saved = np.asarray(Image.open(tmp_path / "out" / "new_clusters.png"))
    assert saved.shape == (4, 6) and sorted(np.unique(saved)) == [0, 127, 254]


def test_label_free_floors_are_scored_like_a_bundle_run(tmp_path):
    """Otsu and colour k-means on the demo test split: the files of a run, the report reads them, matching is over the split."""
    from pathlib import Path

    from s4mi_monai.metrics.samples import read_samples
    from s4mi_monai.study.floors import label_free_floors
    from s4mi_monai.study.report import build_report

    datalist = Path(__file__).resolve().parents[1] / "datalists" / "demo_isic2017.json"
    results = label_free_floors(str(datalist), str(tmp_path), image_size=32, seeds=(0, 1))
    assert set(results) == {"otsu", "kmeans_colour"}
    otsu = results["otsu"]
    assert otsu[0] == otsu[1], "Otsu has no randomness"
    for floor in results:
        for seed in (0, 1):
            folder = tmp_path / floor / f"s{seed}"
            test = results[floor][seed]
            recomputed = read_samples(folder).metrics()
            assert recomputed["iou_per_image_mean"] == pytest.approx(test["iou_per_image_mean"])
            assert 0 <= test["miou_all_classes"] <= 1 and set(test["cluster_to_class"].values()) == {0, 1}
    report = build_report([str(tmp_path / "otsu" / "s0"), str(tmp_path / "kmeans_colour" / "s0")], metrics=["iou_per_image_mean"])
    assert {method for (_, method, _) in report.cells} == {"floor_otsu", "floor_kmeans_colour"}


def test_a_degenerate_clustering_is_warned_about(caplog):
    from s4mi_monai.handlers import PiCIEClustering

    class Engine:
        class state:
            epoch = 3
            metrics: dict = {}

        views = None

    handler = PiCIEClustering()
    engine = Engine()
    engine.views = type("Views", (), {"reshuffle": lambda self, epoch: None})()
    kmeans = type("KMeans", (), {"centroids": torch.zeros(2, 4), "counts": torch.tensor([99.0, 1.0]), "mean_squared_distance": 0.1})
    handler.cluster = lambda engine: (kmeans, kmeans)
    with caplog.at_level("WARNING", logger="s4mi_monai"):
        handler(engine)
    assert engine.state.metrics["smallest_cluster_share"] == pytest.approx(0.01)
    assert "smallest cluster holds 1.0 %" in caplog.text
