"""Losses of s4mi_monai, one module per family, each formula in its docstring."""

from s4mi_monai.losses.cass import cass_loss, cass_predictor_loss, cass_variance_loss, spread_penalties
from s4mi_monai.losses.classification import LOSS_KINDS, ClassificationLoss, classification_loss, inverse_frequency_weights
from s4mi_monai.losses.contrastive import (
    PIXEL_SAMPLING,
    NTXentLoss,
    SupervisedPixelContrastiveLoss,
    nt_xent_loss,
    split_into_blocks,
    stride_sample,
)
from s4mi_monai.losses.dino import DINOLoss
from s4mi_monai.losses.picie import WEIGHTINGS, PiCIELoss, centroid_logits, cluster_weights, nearest_centroid_labels
from s4mi_monai.losses.segmentation import CrossTeachingLoss, ssl4mis_dice_loss, supervised_segmentation_loss

__all__ = [
    "cass_loss",
    "cass_predictor_loss",
    "cass_variance_loss",
    "spread_penalties",
    "CrossTeachingLoss",
    "ssl4mis_dice_loss",
    "supervised_segmentation_loss",
    "DINOLoss",
    "NTXentLoss",
    "PIXEL_SAMPLING",
    "SupervisedPixelContrastiveLoss",
    "nt_xent_loss",
    "split_into_blocks",
    "stride_sample",
    "PiCIELoss",
    "WEIGHTINGS",
    "centroid_logits",
    "cluster_weights",
    "nearest_centroid_labels",
    "LOSS_KINDS",
    "ClassificationLoss",
    "classification_loss",
    "inverse_frequency_weights",
]
