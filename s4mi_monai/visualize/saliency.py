"""Vanilla-gradient saliency maps (Simonyan et al., 2014) of a trained classifier, drawn as in S4MI's Figure 2.

The map of an image is the largest, over colour channels, absolute gradient of one class logit with respect
to the input pixels: where a small change of the image moves that class score most. One backward pass per
image, any differentiable backbone (ResNet or ViT). It shows sensitivity, not evidence, and is noisy; read it
beside the metrics, not instead of them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from monai.utils import convert_to_tensor
from monai.visualize import VanillaGrad
from PIL import Image
from torch import nn

from s4mi_monai.io import atomic_write
from s4mi_monai.transforms.io import to_rgb

logger = logging.getLogger("s4mi_monai")

PANEL_SUFFIX = "_saliency.png"
OVERLAY_ALPHA = 0.5


@contextmanager
def _inspected(network: nn.Module) -> Iterator[None]:
    """Eval mode with frozen weights while maps are computed; every module's mode, flag and gradient restored after.

    Freezing skips the weight gradients the maps never use, and a network handed over mid-training gets
    back exactly what it had (MONAI's hooks would otherwise clear its gradients and force ``train()`` on all).
    """
    modes = [(module, module.training) for module in network.modules()]
    parameters = [(parameter, parameter.requires_grad, parameter.grad) for parameter in network.parameters()]
    network.eval()
    for parameter, _, _ in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, requires_grad, grad in parameters:
            parameter.requires_grad_(requires_grad)
            parameter.grad = grad


def saliency_maps(network: nn.Module, images: torch.Tensor, class_index: int | Sequence[int] | None = None) -> torch.Tensor:
    """``(B, 1, H, W)`` maps in [0, 1] of ``|d logit_c / d x|`` (max over channels) for normalised ``(B, 3, H, W)`` inputs.

    ``c`` is each image's predicted class (argmax of the logits), or ``class_index`` (one class for all
    images, or one per image). Each map is divided by its own maximum, so maps compare within an image only.
    """
    indices = [class_index] * len(images) if class_index is None or isinstance(class_index, int) else list(class_index)
    if len(indices) != len(images):
        raise ValueError(f"class_index has {len(indices)} entries for {len(images)} images")
    maps = []
    with _inspected(network), torch.enable_grad():
        gradient = VanillaGrad(network)  # computes one image at a time
        for image, index in zip(images, indices):
            grad = gradient(image[None].detach().clone(), index=index)
            maps.append(grad.abs().amax(dim=1, keepdim=True))
    stacked = torch.cat(maps)
    peak = stacked.amax(dim=(1, 2, 3), keepdim=True)
    return stacked / peak.clamp_min(torch.finfo(stacked.dtype).tiny)


def _probabilities(network: nn.Module, images: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class probabilities as the bundles report them: softmax, or per-label sigmoid when multi-label."""
    with _inspected(network), torch.no_grad():
        logits = network(images)
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)


def _prediction_text(probabilities: torch.Tensor, class_names: Sequence[str], multi_label: bool) -> str:
    if not multi_label:
        best = int(probabilities.argmax())
        return f"predicted {class_names[best]} ({probabilities[best]:.2f})"
    present = [f"{class_names[k]} ({p:.2f})" for k, p in enumerate(probabilities.tolist()) if p > 0.5]
    return "predicted " + (", ".join(present) if present else "no label above 0.5")


def _panel_names(image_paths: Sequence[str]) -> list[str]:
    """``<stem>_saliency.png``; the source suffix is kept only where two inputs share a stem (``a.png``, ``a.jpg``)."""
    stems = Counter(Path(path).stem for path in image_paths)
    names = []
    for path in map(Path, image_paths):
        stem = path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        names.append(stem + PANEL_SUFFIX)
    return names


def _panel(image: np.ndarray, saliency: np.ndarray, title: str, saliency_title: str) -> Figure:
    """Image, heatmap and overlay side by side (Agg canvas, no pyplot: no global backend state)."""
    figure = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    heat = colormaps["jet"](saliency)[..., :3]
    overlay = (1 - OVERLAY_ALPHA) * image / 255.0 + OVERLAY_ALPHA * heat
    axes[0].imshow(image)
    axes[1].imshow(saliency, cmap="jet", vmin=0, vmax=1)
    axes[2].imshow(overlay)
    for ax, name in zip(axes, ("image", saliency_title, "overlay")):
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.82, wspace=0.04)
    return figure


def write_saliency_panels(
    network: nn.Module,
    images: torch.Tensor,
    image_paths: Sequence[str],
    output_dir: str | Path,
    class_names: Sequence[str],
    multi_label: bool = False,
) -> list[Path]:
    """One ``<stem>_saliency.png`` per image: the file resized to the input size, its saliency map, the overlay.

    ``images`` are the network inputs of ``image_paths`` (preprocessed, on the network's device). The title
    gives the file name and the prediction; the map is for the most probable class (the top label when
    multi-label). Returns the written paths.
    """
    if len(images) != len(image_paths):
        raise ValueError(f"{len(images)} images for {len(image_paths)} paths")
    maps = saliency_maps(network, images)[:, 0].cpu().numpy()
    probabilities = _probabilities(network, images, multi_label).cpu()
    height, width = images.shape[-2:]
    written = []
    for path, name, saliency, probs in zip(image_paths, _panel_names(image_paths), maps, probabilities):
        with Image.open(path) as source:
            picture = np.asarray(to_rgb(source).resize((width, height), Image.Resampling.BOX))
        title = f"{Path(path).name}: {_prediction_text(probs, class_names, multi_label)}"
        figure = _panel(picture, saliency, title, f"saliency ({class_names[int(probs.argmax())]})")
        target = Path(output_dir) / name
        atomic_write(target, lambda out, figure=figure: figure.savefig(out, format="png", dpi=100))
        written.append(target)
    return written


def write_item_saliency(
    network: nn.Module,
    items: Sequence[Mapping],
    preprocessing: Callable[[dict], Mapping],
    class_names: Sequence[str],
    multi_label: bool,
    output_dir: str | Path,
    n_images: int = 8,
) -> list[Path]:
    """Panels for the first ``n_images`` of ``items`` (dicts with an ``"image"`` path), e.g. a bundle's test split.

    ``preprocessing`` is the bundle's own dict transform (load, resize, normalise), so the maps explain
    exactly the inputs the metrics were computed on. Nothing is written when ``n_images <= 0``.
    """
    chosen = list(items)[: max(int(n_images), 0)]
    if not chosen:
        return []
    device = next((parameter.device for parameter in network.parameters()), torch.device("cpu"))
    inputs = [convert_to_tensor(preprocessing(dict(item))["image"], track_meta=False) for item in chosen]
    written = write_saliency_panels(
        network, torch.stack(inputs).to(device), [item["image"] for item in chosen], output_dir, class_names, multi_label
    )
    logger.info("%d saliency panels written to %s", len(written), output_dir)
    return written


def _is_segmentation(bundle_root: Path, model_info: Mapping) -> bool:
    """A segmentation bundle, known from a trained model's info or, before training, from the bundle's metadata."""
    metadata = json.loads((bundle_root / "configs" / "metadata.json").read_text())
    pred_format = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("format")
    return model_info.get("task") == "segmentation" or not model_info.get("classes") or pred_format == "segmentation"


def bundle_saliency(
    bundle: str,
    images: str,
    model_path: str | None = None,
    output_dir: str | None = None,
    n_images: int = 8,
    device: str | None = None,
) -> list[Path]:
    """Panels for the readable images of the folder ``images`` with a classification bundle's trained model.

    The network and preprocessing come from the bundle's own ``configs/inference.json``, so the maps are
    of the same model and inputs as its predictions. Unreadable files are logged by name and skipped.
    The panels go to ``output_dir`` (default ``<bundle>/saliency``).
    """
    from monai.bundle import ConfigParser

    from s4mi_monai.bundle import configure_logging, image_files, locate_bundle, require_model

    configure_logging()
    root = Path(locate_bundle(bundle))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["input_dir"] = images
    if model_path is not None:
        parser["model_path"] = model_path
    if device is not None:
        parser["device"] = device
    info = parser.get_parsed_content("model_info")
    if _is_segmentation(root, info):
        raise ValueError(f"bundle {bundle!r} is a segmentation bundle: saliency maps explain classifiers only")
    weights = parser.get_parsed_content("model_path")
    require_model(weights)
    items = image_files(images)
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(weights, map_location=parser.get_parsed_content("torch_device"), weights_only=True))
    return write_item_saliency(
        network,
        items,
        parser.get_parsed_content("preprocessing"),
        info["classes"],
        bool(info["multi_label"]),
        output_dir or root / "saliency",
        n_images,
    )
