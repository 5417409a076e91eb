"""What a bundle needs to know about each dataset: its demo datalist, task flavour and inference scale.

This is the one place where bundle generation learns dataset facts; bundles themselves stay generic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetProfile:
    """Dataset facts that change how a bundle is configured."""

    name: str
    title: str
    demo_datalist: str
    multi_label: bool
    challenge: str | None = None
    red_normalization: bool = False
    slide_scale: float | None = None  # tiles were resized by this factor: inference on whole slides rescales first

    @property
    def image_kind(self) -> str:
        return "histology slide tiles" if self.slide_scale else "RGB skin-lesion images"


PROFILES = {
    "isic": DatasetProfile("isic", "ISIC-2017 dermoscopy", "demo_isic2017.json", multi_label=False, challenge="isic2017"),
    "dermofit": DatasetProfile("dermofit", "Dermofit clinical images", "demo_dermofit.json", multi_label=False, red_normalization=True),
    "dermatomyositis": DatasetProfile(
        "dermatomyositis", "Dermatomyositis-style histology slides", "demo_dermatomyositis.json", multi_label=True, slide_scale=224 / 480
    ),
}
