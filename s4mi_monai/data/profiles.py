"""What is known about each dataset: the facts a datalist carries, and what bundle generation needs.

Two facts change how a method trains or scores and travel in the datalist itself (``s4mi prepare`` writes them):
``challenge``, the dataset's own challenge score added to the classification metrics, and ``red_normalization``,
the red-channel normalisation of the images. :func:`dataset_facts` gives them for datalists written before
they were recorded. The rest (demo datalist, title, inference scale) is what the bundle generator writes into a
bundle's defaults and documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DatasetProfile:
    """Dataset facts that change how a bundle is configured."""

    name: str
    datalist_name: str
    title: str
    demo_datalist: str
    multi_label: bool
    challenge: str | None = None
    red_normalization: bool = False
    slide_scale: float | None = None  # tiles were resized by this factor: inference on whole slides rescales first

    @property
    def image_kind(self) -> str:
        return "histology slide tiles" if self.slide_scale else "RGB skin-lesion images"

    @property
    def facts(self) -> dict[str, Any]:
        """The dataset facts its datalists carry."""
        return {"challenge": self.challenge, "red_normalization": self.red_normalization}


PROFILES = {
    "isic": DatasetProfile("isic", "isic2017", "ISIC-2017 dermoscopy", "demo_isic2017.json", multi_label=False, challenge="isic2017"),
    "dermofit": DatasetProfile(
        "dermofit", "dermofit", "Dermofit clinical images", "demo_dermofit.json", multi_label=False, red_normalization=True
    ),
    "dermatomyositis": DatasetProfile(
        "dermatomyositis",
        "dermatomyositis",
        "Dermatomyositis-style histology slides",
        "demo_dermatomyositis.json",
        multi_label=True,
        slide_scale=224 / 480,
    ),
}
"""The datasets every method gets a bundle for, by bundle suffix (``cass_isic``)."""

DEFAULT_FACTS: dict[str, Any] = {"challenge": None, "red_normalization": False}


def dataset_facts(datalist_name: str) -> dict[str, Any]:
    """The facts of the dataset a datalist was prepared from (by its ``name``); defaults for any other dataset."""
    for profile in PROFILES.values():
        if profile.datalist_name == datalist_name:
            return profile.facts
    return dict(DEFAULT_FACTS)
