"""The one list of bundles (name, method, dataset) that the generator, the README writer and the tests read.

A bundle is a method applied to a dataset: ``bundles/<method>_<dataset>/``. Adding a method means one
:class:`Method` here and its config builders; every dataset of :data:`s4mi_monai.data.profiles.PROFILES`
then gets a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

from s4mi_monai.data.profiles import PROFILES, DatasetProfile


@dataclass(frozen=True)
class Method:
    """A training method and the family of configs it is built from."""

    name: str  # e.g. "supervised_cls"
    task: str  # "classification" | "segmentation"
    family: str  # "supervised" | "self_supervised" | "semi_supervised" | "contrastive" | "unsupervised"
    description: str


METHODS = (
    Method("supervised_cls", "classification", "supervised", "Supervised ImageNet-transfer classification baseline (ResNet-50 or ViT-B/16)"),
    Method(
        "supervised_seg",
        "segmentation",
        "supervised",
        "Supervised U-Net with a ResNet-34 encoder (the DEDL baseline) or the cross-teaching networks, 1/2 (Dice + CE)",
    ),
    Method("dino", "classification", "self_supervised", "DINO self-supervised pretraining, then fine-tuning on a fraction of the labels"),
    Method("cass", "classification", "self_supervised", "CASS self-supervised pretraining (ResNet-50 + ViT-B/16), then fine-tuning of each"),
    Method(
        "crossteach_seg",
        "segmentation",
        "semi_supervised",
        "Semi-supervised cross teaching between a CNN U-Net and a Swin-UNet, on a fraction of the masks",
    ),
    Method(
        "contrast_seg",
        "segmentation",
        "contrastive",
        "Semi-supervised contrastive segmentation: global, then supervised local contrastive pretraining, then fine-tuning",
    ),
    Method(
        "picie_seg",
        "segmentation",
        "unsupervised",
        "Unsupervised segmentation by PiCIE (pixel clustering with invariance and equivariance), no masks in training",
    ),
)


@dataclass(frozen=True)
class BundleSpec:
    """One bundle: a method applied to a dataset."""

    method_info: Method
    profile: DatasetProfile

    @property
    def method(self) -> str:
        return self.method_info.name

    @property
    def task(self) -> str:
        return self.method_info.task

    @property
    def description(self) -> str:
        return self.method_info.description

    @property
    def name(self) -> str:
        return f"{self.method}_{self.profile.name}"

    @property
    def self_supervised(self) -> bool:
        return self.method_info.family == "self_supervised"

    @property
    def semi_supervised(self) -> bool:
        return self.method_info.family == "semi_supervised"

    @property
    def contrastive(self) -> bool:
        return self.method_info.family == "contrastive"

    @property
    def unsupervised(self) -> bool:
        return self.method_info.family == "unsupervised"


def _bundle_order() -> list[BundleSpec]:
    """Supervised bundles first, then self-, semi- and unsupervised; datasets in profile order within each."""
    families = ("supervised", "self_supervised", "semi_supervised", "contrastive", "unsupervised")
    return [
        BundleSpec(method, profile)
        for family in families
        for profile in PROFILES.values()
        for method in METHODS
        if method.family == family
    ]


BUNDLES: dict[str, BundleSpec] = {spec.name: spec for spec in _bundle_order()}
