"""Run-time helpers that bundle configs call: finding the bundle, the demo data, reading input folders, reporting.

Bundle JSON stays declarative; anything that would otherwise be a long ``$`` expression lives here,
named and tested.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4mi_monai.data.check import IMAGE_SUFFIXES, inspect_file
from s4mi_monai.data.datalist import load_datalist, verify_datalist
from s4mi_monai.distributed import barrier, is_main_process, launch_world_size, unwrap
from s4mi_monai.io import write_json
from s4mi_monai.metrics.samples import ARRAYS, SAMPLES_FILE, write_samples

logger = logging.getLogger("s4mi_monai")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CACHE = Path(os.environ.get("S4MI_DEMO_DIR", Path.home() / ".cache" / "s4mi_monai"))
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", "none", ""}


def as_bool(value: Any) -> bool:
    """A config knob as a bool: ``--amp false`` arrives as the string ``"false"``."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        raise ValueError(f"expected true or false, got {value!r}")
    return bool(value)


def to_device(network: torch.nn.Module, device: torch.device, channels_last: Any = False) -> torch.nn.Module:
    """``network`` on ``device``, in channels-last memory layout when ``channels_last`` (faster convolutions on GPU)."""
    memory_format = torch.channels_last if as_bool(channels_last) else torch.contiguous_format
    return network.to(device, memory_format=memory_format)


def locate_bundle(name: str) -> str:
    """The bundle folder, whether the command runs from the repository root or inside the bundle."""
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundles" / name, REPO_ROOT / "bundles" / name):
        if candidate.name == name and (candidate / "configs" / "metadata.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"bundle {name!r} not found from {cwd}; run from the repository root or the bundle folder, or pass --bundle_root"
    )


def demo_datalist(file_name: str) -> str:
    """The committed demo datalist; outside a checkout, demo data generated once into a cache folder."""
    committed = REPO_ROOT / "datalists" / file_name
    if committed.is_file():
        return str(committed)
    cached = DEMO_CACHE / "datalists" / file_name
    if not cached.is_file():
        from s4mi_monai.data.demo_datalists import prepare_demo

        logger.info("no dataset given and no checkout: generating demo data under %s", DEMO_CACHE)
        prepare_demo(DEMO_CACHE / "demo_data", DEMO_CACHE / "datalists")
    return str(cached)


def open_datalist(datalist: str | None, demo_file: str, dataset_dir: str | None = None) -> dict:
    """The datalist a bundle trains on: ``--datalist`` if given, else the demo datalist; checked whole before any step."""
    loaded = load_datalist(datalist or demo_datalist(demo_file), dataset_dir)
    verify_datalist(loaded)
    return loaded


def class_weights(items: Sequence[Mapping], num_classes: int, multi_label: bool, weighting: str | None) -> torch.Tensor | None:
    """Per-class loss weights from the labeled training items (``inverse_frequency``) or ``None``."""
    if not weighting:
        return None
    if weighting != "inverse_frequency":
        raise ValueError(f"unknown class weighting {weighting!r}; use inverse_frequency or null")
    from s4mi_monai.losses import inverse_frequency_weights

    labels = np.array([item["label"] for item in items])
    return inverse_frequency_weights(labels, num_classes, multi_label)


class InputImages(list):
    """The readable images of an input folder as ``{"image": path}`` items, and what was left out and why."""

    def __init__(self, items: Sequence[dict], unreadable: Sequence[tuple[str, str]], not_images: Sequence[str]) -> None:
        super().__init__(items)
        self.unreadable = list(unreadable)
        self.not_images = list(not_images)


def image_files(input_dir: str) -> InputImages:
    """Every readable image in ``input_dir``; unreadable images and files that are not images are logged by name
    and left out (:func:`finish_inference` then reports them and fails the run)."""
    folder = Path(input_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    readable, unreadable, not_images = [], [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            logger.warning("not an image (%s), left out: %s", ", ".join(IMAGE_SUFFIXES), path)
            not_images.append(str(path))
            continue
        try:
            inspect_file(str(path))
        except ValueError as err:
            logger.error("skipping %s: %s", path, err)
            unreadable.append((str(path), str(err)))
            continue
        readable.append({"image": str(path)})
    if not readable:
        logger.warning("no readable images (%s) in %s", ", ".join(IMAGE_SUFFIXES), folder)
    return InputImages(readable, unreadable, not_images)


def finish_inference(images: Sequence[dict], output_dir: str) -> None:
    """After the predictions are written: a summary, and exit status 1 when an image could not be read (the others'
    predictions are kept), so that a script or a pipeline sees the failure."""
    unreadable = getattr(images, "unreadable", [])
    not_images = getattr(images, "not_images", [])
    logger.info("predictions for %d image(s) written to %s", len(images), output_dir)
    if not_images:
        logger.warning("%d file(s) left out as not images: %s", len(not_images), ", ".join(Path(p).name for p in not_images))
    if unreadable:
        listing = "\n".join(f"  - {path}: {reason}" for path, reason in unreadable)
        raise SystemExit(f"{len(unreadable)} image(s) could not be read and have no prediction:\n{listing}")


def classification_items(datalist: Mapping, split: str, label_fraction: float | None = None) -> list[dict]:
    """Labeled items of a split (the labeled fraction for training), image paths made absolute."""
    from s4mi_monai.data.datalist import split_items

    return split_items(datalist, split, label_fraction, require=("label",))


def segmentation_items(datalist: Mapping, split: str, label_fraction: float | None = None) -> list[dict]:
    """Items with a mask, the mask under MONAI's ``label`` key (the class label kept as ``class_label``)."""
    from s4mi_monai.data.datalist import split_items

    items = []
    for item in split_items(datalist, split, label_fraction, require=("mask",)):
        entry = {key: value for key, value in item.items() if key not in ("label", "mask", "tile_box")}
        entry["label"] = item["mask"]
        items.append(entry)
    return items


def configure_logging(level: int = logging.INFO) -> None:
    """Show the package's epoch lines even when a bundle runs without its logging.conf; under torchrun only rank 0's
    (the other ranks keep their warnings and errors)."""
    from s4mi_monai.distributed import launch_rank

    package_logger = logging.getLogger("s4mi_monai")
    package_logger.setLevel(level if launch_rank() == 0 else max(level, logging.WARNING))
    if not logging.getLogger().handlers and not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        package_logger.addHandler(handler)


MODEL_INFO = "model_info.json"


def write_model_info(output_dir: str, info: Mapping[str, Any]) -> None:
    """Store what inference needs to rebuild the network (classes, sizes) beside the weights (rank 0 under torchrun)."""
    if not is_main_process():
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(output_dir) / MODEL_INFO, dict(info))


def read_model_info(model_path: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The model's ``model_info.json`` if training wrote one, else the bundle's demo defaults."""
    import json

    path = Path(model_path).parent / MODEL_INFO
    info = dict(defaults)
    if path.is_file():
        info.update(json.loads(path.read_text()))
    return info


def load_checkpoints(handlers: Sequence[Any]) -> None:
    """Load the weights that an inference config's ``CheckpointLoader`` handlers name, without an engine (``run slides``).

    As the handler does: a checkpoint without the handler's single key is that object's state dict.
    """
    from monai.handlers import CheckpointLoader

    for handler in handlers:
        if not isinstance(handler, CheckpointLoader):
            continue
        checkpoint = torch.load(handler.load_path, map_location=handler.map_location, weights_only=True)
        if len(handler.load_dict) == 1 and next(iter(handler.load_dict)) not in checkpoint:
            checkpoint = {next(iter(handler.load_dict)): checkpoint}
        for key, module in handler.load_dict.items():
            module.load_state_dict(checkpoint[key], strict=handler.strict)


def require_model(model_path: str) -> None:
    """Fail before reading any image when there is no trained model to predict with."""
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"no trained model at {model_path}: run the bundle's training first, or pass --model_path")


def report_test_metrics(
    evaluator: Any,
    network: torch.nn.Module,
    model_path: str,
    metrics_path: str,
    settings: Mapping[str, Any],
    best_saver: Any = None,
    extra_test: Mapping[str, Any] | None = None,
) -> dict:
    """Score the selected model (``model_path``) on the test split and write ``metrics.json``.

    ``extra_test``: a method's own test scores (PiCIE's all-class scores), written beside the shared evaluator's.
    Under torchrun rank 0 scores the whole test split and the other ranks return ``{}``."""
    if not is_main_process():
        return {}
    require_model(model_path)
    device = next(network.parameters()).device
    unwrap(network).load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    evaluator.run()
    test = {**evaluator.state.s4mi_metrics["test_metric"], **(extra_test or {})}
    write_test_samples(evaluator, Path(metrics_path).with_name(SAMPLES_FILE))
    validation = None
    if best_saver is not None:
        validation = {"metric": settings["selection_metric"], "best": best_saver.best_metric, "epoch": best_saver.best_epoch}
    write_json(metrics_path, {"test": test, "validation": validation, "settings": dict(settings)})
    logger.info("test metrics written to %s", metrics_path)
    return test


def write_test_samples(evaluator: Any, path: Path) -> None:
    """The per-image records behind the test metrics (``test_samples.json``), for intervals and paired tests.

    Rows are in the order of the evaluator's (unshuffled) test dataset, whose image names are stored with them.
    """
    samples = getattr(evaluator.state, "s4mi_samples", {}).get("test_metric")
    if samples is None:
        return
    items = getattr(getattr(evaluator.data_loader, "dataset", None), "data", None)
    images = [str(item.get("image", "")) for item in items] if items is not None else []
    if len(images) != len(samples[ARRAYS[samples["task"]][0]]):
        logger.warning("test records of %s are not in dataset order (distributed run?): written without image names", path)
        images = []
    write_samples(path, samples, images)


def unlabeled_items(datalist: Mapping, split: str = "training", label_fraction: float | None = None) -> list[dict]:
    """Images as ``{"image": path}``, labels dropped: every image of a split (label-free pretraining), or with a
    ``label_fraction`` the training images outside that labeled subset (the unlabeled stream of semi-supervised training)."""
    from s4mi_monai.data.datalist import split_items

    if label_fraction is None:
        return [{"image": item["image"]} for item in split_items(datalist, split, None)]
    return [{"image": item["image"]} for item in split_items(datalist, split, label_fraction, labeled=False)]


def with_weights(module: torch.nn.Module, weights: str | None) -> torch.nn.Module:
    """``module`` after loading a local weights file into it (ImageNet initialisation of pretraining), if given."""
    if weights:
        from s4mi_monai.networks import load_pretrained

        report = load_pretrained(module, weights)
        logger.info("initialised %s from %s: %s", type(module).__name__, weights, report)
    return module


def save_backbone(backbone: torch.nn.Module, path: str) -> None:
    """Write a network's (a pretrained backbone's) state dict atomically, on the CPU (rank 0 under torchrun)."""
    from s4mi_monai.io import atomic_torch_save

    if not is_main_process():
        return

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu() for key, value in unwrap(backbone).state_dict().items()}
    atomic_torch_save(state, path)
    logger.info("%s written to %s", type(unwrap(backbone)).__name__, path)


def load_backbone(network: torch.nn.Module, path: str) -> None:
    """Initialise a network's encoder (a classifier's ``backbone``, a U-Net's ``encoder``) from a pretraining output."""
    from s4mi_monai.networks import load_pretrained

    network = unwrap(network)
    report = load_pretrained(network.backbone if hasattr(network, "backbone") else network.encoder, path)
    logger.info("fine-tuning starts from %s: %s", path, report)


def indexed(items: Sequence[Mapping]) -> list[dict]:
    """Items with their position as ``index``, which keys per-image draws that must repeat within an epoch (PiCIE's views)."""
    return [{**item, "index": index} for index, item in enumerate(items)]


def refuse_to_replace(output_dir: str, method: str) -> None:
    """Stop before anything trains when ``output_dir`` holds a ``method`` model that this run would overwrite."""
    import json

    path = Path(output_dir) / MODEL_INFO
    if path.is_file() and json.loads(path.read_text()).get("method") == method:
        raise FileExistsError(
            f"{output_dir} holds a {method} model (model.pt, metrics.json) that fine-tuning would replace; "
            "pass --output_dir to fine-tune into another folder"
        )


def evaluate_clusters(
    segmenter: Any,
    clustering_loader: Any,
    evaluator: Any,
    model_path: str,
    metrics_path: str,
    settings: Mapping[str, Any],
    model_info: Mapping[str, Any],
    matching: str = "hungarian",
    init_batches: int = 20,
    n_iter: int = 20,
    seed: int = 0,
) -> dict:
    """PiCIE's evaluation: final centroids from scratch on the images of ``clustering_loader`` (its masks unread),
    clusters matched to classes over the test split (``matching``), the segmenter (network, centroids and matching)
    saved as ``model_path`` with its ``model_info.json``, then the test report of :func:`report_test_metrics` with
    the reference's all-class scores beside the shared evaluator's. Rank 0 only under torchrun (the others return {})."""
    from s4mi_monai.engines import fit_final_centroids, match_clusters

    if not is_main_process():
        return {}
    fit_final_centroids(segmenter, clustering_loader, init_batches, n_iter, seed)
    _, scores = match_clusters(segmenter, evaluator.data_loader, matching)
    save_backbone(segmenter, model_path)
    write_model_info(os.path.dirname(model_path), {**model_info, "matching": matching, "cluster_to_class": scores["cluster_to_class"]})
    logger.info("clusters matched to classes on the test split: %s", scores["cluster_to_class"])
    return report_test_metrics(evaluator, segmenter, model_path, metrics_path, settings, extra_test=scores)


def report_cluster_metrics(
    segmenter: Any, evaluator: Any, model_path: str, metrics_path: str, settings: Mapping[str, Any], model_info: Mapping[str, Any]
) -> dict:
    """Score a saved PiCIE segmenter on the test split with the matching saved beside it (``evaluate.json``)."""
    from s4mi_monai.engines import match_clusters

    require_model(model_path)
    segmenter.load_state_dict(torch.load(model_path, map_location=segmenter.centroids.device, weights_only=True))
    _, scores = match_clusters(segmenter, evaluator.data_loader, model_info.get("matching", "hungarian"), model_info["cluster_to_class"])
    return report_test_metrics(evaluator, segmenter, model_path, metrics_path, settings, extra_test=scores)


CONTRASTIVE_PRETRAINING = ("global_local", "global_unsupervised_local", "global", "none")
"""``--pretraining`` of contrastive segmentation: which stages run before fine-tuning (the stage-2 ablation)."""


def contrastive_stage(pretraining: str, stage: str) -> bool:
    """Whether ``stage`` (``"global"`` or ``"local"``) runs under ``--pretraining`` (:data:`CONTRASTIVE_PRETRAINING`)."""
    if pretraining not in CONTRASTIVE_PRETRAINING:
        raise ValueError(f"--pretraining must be one of {CONTRASTIVE_PRETRAINING}, got {pretraining!r}")
    return pretraining != "none" and (stage == "global" or pretraining.endswith("local"))


def load_stage_weights(network: torch.nn.Module, path: str | None, part: str) -> None:
    """Start a contrastive-segmentation stage from the previous stage's saved network: its ``encoder`` (encoder and
    centre: what the global stage trained) or its ``features`` (all but the segmentation head); nothing if no path."""
    network = unwrap(network)
    if not path:
        logger.info("%s starts from random initialisation", type(network).__name__)
        return
    wanted = set((network.encoder_state_dict() if part == "encoder" else network.feature_state_dict()).keys())
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = {key: value for key, value in saved.items() if key in wanted}
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensors of the {part} (e.g. {sorted(missing)[0]}): not a stage output of this network")
    network.load_state_dict(state, strict=False)
    logger.info("%s starts from the %s of %s (%d tensors)", type(network).__name__, part, path, len(state))


def finetuning_start(pretraining: str, global_path: str, local_path: str) -> tuple[str | None, str]:
    """The file and part fine-tuning starts from: the local stage's features, the global stage's encoder, or nothing."""
    if contrastive_stage(pretraining, "local"):
        return local_path, "features"
    if contrastive_stage(pretraining, "global"):
        return global_path, "encoder"
    return None, "encoder"


CASS_STABILISERS = ("none", "predictor", "variance")
"""``--stabiliser`` of the CASS bundles: plain CASS, or an opt-in deviation: the predictor with stop-gradient, or
VICReg's variance and covariance terms added to the loss."""


def cass_predictors(stabiliser: str, dim: int) -> torch.nn.ModuleDict:
    """The predictors of CASS's ``--stabiliser``: one :class:`PredictionHead` per branch for ``"predictor"``, none for ``"none"``."""
    from s4mi_monai.networks import PredictionHead

    if stabiliser not in CASS_STABILISERS:
        raise ValueError(f"--stabiliser must be one of {CASS_STABILISERS}, got {stabiliser!r}")
    if stabiliser != "predictor":
        return torch.nn.ModuleDict()
    return torch.nn.ModuleDict({"cnn": PredictionHead(dim), "transformer": PredictionHead(dim)})


def cass_loss_function(stabiliser: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of CASS's ``--stabiliser`` for two outputs: the variance stabiliser's, else the CASS loss (the predictor
    stabiliser's loss is taken by the trainer, which has the predictors)."""
    from s4mi_monai.losses import cass_loss, cass_variance_loss

    if stabiliser not in CASS_STABILISERS:
        raise ValueError(f"--stabiliser must be one of {CASS_STABILISERS}, got {stabiliser!r}")
    return cass_variance_loss if stabiliser == "variance" else cass_loss


def branch_parameters(network: torch.nn.Module, predictors: torch.nn.ModuleDict, branch: str) -> list[torch.nn.Parameter]:
    """A CASS branch's trainable parameters: its network's and, with the predictor stabiliser, its predictor's."""
    extra = list(predictors[branch].parameters()) if branch in predictors else []
    return [*network.parameters(), *extra]


def note_cass_start(pretrained_weights: str | None, on_constant_collapse: str) -> None:
    """Say up front what CASS needs: from random initialisation its outputs become constant (measured on ISIC-2017:
    pairwise cosine 0.93-0.98 at initialisation, 1.000 within 15 steps, at every learning rate tried); the paper
    starts from ImageNet weights."""
    if pretrained_weights:
        logger.info("CASS: the CNN starts from %s", pretrained_weights)
        return
    action = "the run stops" if on_constant_collapse == "stop" else "a warning is logged each epoch"
    logger.warning(
        "CASS starts from random initialisation, where it collapses to a constant output within a few dozen steps "
        "(the paper starts from ImageNet weights: --pretrained_weights FILE, a local state dict of the CNN backbone). "
        "When every image gets the same output %s (--on_constant_collapse %s).",
        action,
        "warn to continue anyway" if on_constant_collapse == "stop" else "stop to stop instead",
    )


def pretrain(trainer: Any, run_handlers: Sequence[Any], backbones: Sequence[tuple[torch.nn.Module, str]], skip_if_done: bool = False) -> None:
    """Label-free pretraining (resumed from its checkpoint if one exists), then each ``(backbone, path)`` written.

    With ``skip_if_done`` (the ``run`` id), a restarted run whose pretrained files all exist goes straight to
    fine-tuning and says so; the ``pretrain`` id always pretrains.
    """
    paths = [path for _, path in backbones]
    if skip_if_done and all(os.path.exists(path) for path in paths):
        logger.info(
            "pretraining already done (%s): fine-tuning from it; delete the file(s) or run the 'pretrain' id to pretrain again",
            ", ".join(paths),
        )
        return
    for handler in run_handlers:
        handler.attach(trainer)
    trainer.run()
    for backbone, path in backbones:
        save_backbone(backbone, path)
    barrier()  # under torchrun the other ranks read the files rank 0 wrote

def publish_branch(output_dir: str, report_branch: str, branches: Sequence[str]) -> None:
    """Copy the reported network's model, info, history and curves to ``output_dir``; one metrics.json with every branch.

    CASS fine-tunes its CNN and its transformer separately, cross teaching trains both together; each network's
    files are in ``<output_dir>/<branch>/``. Inference and evaluation use ``<output_dir>/model.pt``, the
    ``report_branch`` (default the CNN: the paper's tables report both, Luo et al. report the CNN).
    """
    if not is_main_process():
        return
    import json
    import shutil

    if report_branch not in branches:
        raise ValueError(f"report_branch must be one of {list(branches)}, got {report_branch!r}")
    root = Path(output_dir)
    for name in ("model.pt", MODEL_INFO, "history.json", "curves.png", SAMPLES_FILE):
        if name in ("history.json", "curves.png", SAMPLES_FILE) and not (root / report_branch / name).is_file():
            continue  # networks trained together (cross teaching) share one history at the top
        temporary = root / f".{name}.tmp"
        shutil.copyfile(root / report_branch / name, temporary)
        os.replace(temporary, root / name)
    metrics = {branch: json.loads((root / branch / "metrics.json").read_text()) for branch in branches}
    reported = metrics[report_branch]
    write_json(
        root / "metrics.json",
        {
            "test": reported["test"],
            "validation": reported["validation"],
            "settings": {**reported["settings"], "reported_branch": report_branch},
            "branches": {branch: {"test": value["test"], "validation": value["validation"]} for branch, value in metrics.items()},
        },
    )
    logger.info("reported network: %s (all branches in %s)", report_branch, root / "metrics.json")


def branch_model_path(model_path: str, branch: str) -> str:
    """The weights of one network of a two-network bundle: ``model_path`` itself when its ``model_info.json``
    names that branch (the published copy), else ``<folder of model_path>/<branch>/model.pt``."""
    import json

    info = Path(model_path).parent / MODEL_INFO
    if info.is_file() and json.loads(info.read_text()).get("branch") == branch:
        return model_path
    return str(Path(model_path).parent / branch / "model.pt")


def drop_single_image_batch(dataset_size: int, batch_size: int) -> bool:
    """A training loader's ``drop_last``: true only when its last batch would hold a single image (on each rank).

    BatchNorm cannot train on one image whose deepest feature map is 1x1 (32 px through a ResNet: PyTorch stops
    with "Expected more than 1 value per channel when training"), and at any size one image's statistics are
    noise. Any larger remainder is kept, so no other run changes; a dataset of one image is left as it is.
    """
    per_rank = -(-dataset_size // launch_world_size())  # the overlay's DistributedSampler pads every rank to one share
    return per_rank > batch_size and per_rank % batch_size == 1


def epochs_for_iterations(max_iterations: int | str | None, max_epochs: int, iterations_per_epoch: int) -> int:
    """The epochs a training runs: ``max_epochs``, or with ``--max_iterations N`` the fewest whole epochs that make at
    least N optimiser steps, ``ceil(N / iterations_per_epoch)``.

    An epoch at 10 % of the labels is a tenth of one at 100 %: comparing label fractions at equal epochs gives the
    small fractions fewer steps. References that fix iterations (SSL4MIS) are matched by fixing the steps instead;
    the learning-rate schedule, which spans every epoch, follows.
    """
    if max_iterations is None:
        return int(max_epochs)
    try:
        steps = int(max_iterations)
    except ValueError:
        message = f"--max_iterations takes a whole number of optimiser steps (or null for max_epochs), got {max_iterations!r}"
        raise ValueError(message) from None
    if steps < 1:
        raise ValueError(f"--max_iterations must be at least 1, got {steps}")
    if iterations_per_epoch < 1:
        raise ValueError(f"--max_iterations {steps}: the training data loader is empty, so an epoch has no steps")
    return -(-steps // iterations_per_epoch)  # ceil in integers
