"""Red-channel normalisation for skin images (Thanh et al. 2019).

``R' = R / sqrt(R^2 + G^2 + B^2 + eps)``; G and B are kept. The ratio removes much of the
illumination and skin-tone variation from the red channel. The S4MI code applied it at training
time only; here it is an ordinary transform, so a bundle puts it in the preprocessing that training,
evaluation and inference share.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_tensor


class RedChannelNormalize(Transform):
    """Replace the red channel of a channel-first RGB image by ``R / sqrt(R^2 + G^2 + B^2 + eps)``."""

    def __init__(self, eps: float = 1e-11) -> None:
        self.eps = eps

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = convert_to_tensor(image, track_meta=True)
        if image.ndim < 3 or image.shape[0] != 3:
            raise ValueError(f"red-channel normalisation needs a channel-first RGB image, got shape {tuple(image.shape)}")
        out = image.clone().float()
        out[0] = out[0] / torch.sqrt((out**2).sum(dim=0) + self.eps)
        return out


class RedChannelNormalized(MapTransform):
    """Dictionary version of :class:`RedChannelNormalize`."""

    def __init__(self, keys: KeysCollection, eps: float = 1e-11, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = RedChannelNormalize(eps)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d


class NormalizeBatch:
    """Network input from a (B, 3, H, W) batch in [0, 1]: optional red-channel normalisation, then per-channel
    ``(x − mean) / std`` (ImageNet statistics by default), on the batch's device.

    The same steps as the dictionary transforms of the fine-tuning pipeline, for views that are made batch-wise
    on the GPU during self-supervised pretraining.
    """

    def __init__(
        self,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        red_normalization: bool = False,
        eps: float = 1e-11,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.red_normalization = bool(red_normalization)
        self.eps = eps

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"NormalizeBatch needs a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        images = images.float()
        if self.red_normalization:
            red = images[:, :1] / torch.sqrt((images**2).sum(dim=1, keepdim=True) + self.eps)
            images = torch.cat((red, images[:, 1:]), dim=1)
        return (images - self.mean.to(images.device)) / self.std.to(images.device)


__all__: Sequence[str] = ("NormalizeBatch", "RedChannelNormalize", "RedChannelNormalized")
