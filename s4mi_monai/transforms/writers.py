"""Writing segmentation predictions for people: a mask PNG and an overlay PNG per input image."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image

from s4mi_monai.transforms.io import to_rgb

OVERLAY_COLOUR = np.array([255, 40, 40], dtype=np.float32)


def _atomic_save(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    image.save(tmp)
    os.replace(tmp, path)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Tint the foreground of ``mask`` on an ``(H, W, 3)`` uint8 image and draw its outline in full colour."""
    out = image.astype(np.float32)
    foreground = mask > 0
    out[foreground] = (1 - alpha) * out[foreground] + alpha * OVERLAY_COLOUR
    edge = foreground & ~(np.roll(foreground, 1, 0) & np.roll(foreground, -1, 0) & np.roll(foreground, 1, 1) & np.roll(foreground, -1, 1))
    out[edge] = OVERLAY_COLOUR
    return out.clip(0, 255).astype(np.uint8)


class SaveMaskAndOverlayd(MapTransform):
    """Save ``<stem>_mask.png`` (0/255) and ``<stem>_overlay.png`` for each predicted label map.

    The label map must be at the input image's size (restore it with ``Invertd`` first). MONAI's
    ``PILReader`` returns images as (W, H), so the map is transposed back to the file's (H, W).
    """

    def __init__(self, keys: KeysCollection, output_dir: str, source_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for key in self.key_iterator(d):
            source = Path(d[key].meta.get("filename_or_obj") or d[self.source_key].meta["filename_or_obj"])
            labels = np.asarray(d[key].detach().cpu()).squeeze(0).T.astype(np.uint8)
            with Image.open(source) as original:
                rgb = np.asarray(to_rgb(original))
            if labels.shape != rgb.shape[:2]:
                raise ValueError(f"prediction for {source} has shape {labels.shape}, the image {rgb.shape[:2]}")
            _atomic_save(Image.fromarray((labels > 0).astype(np.uint8) * 255), self.output_dir / f"{source.stem}_mask.png")
            _atomic_save(Image.fromarray(overlay(rgb, labels)), self.output_dir / f"{source.stem}_overlay.png")
        return d


class SaveClusterMapd(MapTransform):
    """Save ``<stem>_clusters.png`` for each predicted cluster map (PiCIE), leaving the map as it is.

    The PNG holds the cluster numbers spread over 0-255 (``num_clusters`` of them) so they can be told apart
    by eye. The map must be at the input image's size (``Invertd`` first); :class:`ClustersToClassesd` then
    turns it into the class map. Kept apart so that clients that save predictions themselves (MONAI Label) can
    leave the writer out and keep the mapping.
    """

    def __init__(self, keys: KeysCollection, output_dir: str, num_clusters: int, source_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.source_key = source_key
        self.step = 255 // max(int(num_clusters) - 1, 1)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for key in self.key_iterator(d):
            source = Path(d[key].meta.get("filename_or_obj") or d[self.source_key].meta["filename_or_obj"])
            picture = np.asarray(torch.as_tensor(d[key]).long().detach().cpu()).squeeze(0).T.astype(np.uint8) * self.step
            _atomic_save(Image.fromarray(picture), self.output_dir / f"{source.stem}_clusters.png")
        return d


class ClustersToClassesd(MapTransform):
    """Turn a cluster map into the matched class map with ``cluster_to_class`` (PiCIE's matching, saved with the model).

    No labels are needed here: the matching was learned at evaluation. Clusters it leaves unmatched (-1) become
    background.
    """

    def __init__(self, keys: KeysCollection, cluster_to_class: Mapping[str | int, int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        table = {int(cluster): max(int(cls), 0) for cluster, cls in cluster_to_class.items()}
        self.table = torch.tensor([table[k] for k in range(len(table))])

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            clusters = torch.as_tensor(d[key]).long()
            classes = self.table.to(clusters.device)[clusters]
            d[key] = MetaTensor(classes, meta=d[key].meta) if isinstance(d[key], MetaTensor) else classes
        return d
