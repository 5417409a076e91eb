"""MONAI transforms of s4mi_monai: RGB loading, mask binarisation, colour augmentation, the augmentations of contrastive
segmentation, red-channel normalisation, slide tiling, prediction writers."""

from s4mi_monai.transforms.color import (
    RandColorJitter,
    RandColorJitterd,
    RandGaussianBlur,
    RandGaussianBlurd,
    RandGrayscale,
    RandGrayscaled,
    RandSolarize,
    RandSolarized,
)
from s4mi_monai.transforms.contrastive import (
    VIEW_KEYS,
    contrastive_finetune_transforms,
    global_contrastive_transforms,
    local_contrastive_transforms,
)
from s4mi_monai.transforms.intensity import NormalizeBatch, RedChannelNormalize, RedChannelNormalized
from s4mi_monai.transforms.io import BinarizeMaskd, mask_reader, rgb_reader, to_gray, to_rgb
from s4mi_monai.transforms.multicrop import MultiCropBatch, MultiCropd, RandResizedCrop, multi_crop_views, resized_crop, sample_crop_boxes
from s4mi_monai.transforms.picie import PiCIEViews, ViewParameters
from s4mi_monai.transforms.tiling import TileSlide, TileSlided, tile_array, tile_boxes
from s4mi_monai.transforms.writers import ClustersToClassesd, SaveClusterMapd, SaveMaskAndOverlayd, overlay

__all__ = [
    "NormalizeBatch",
    "VIEW_KEYS",
    "contrastive_finetune_transforms",
    "global_contrastive_transforms",
    "local_contrastive_transforms",
    "sample_crop_boxes",
    "resized_crop",
    "multi_crop_views",
    "RandResizedCrop",
    "MultiCropd",
    "MultiCropBatch",
    "PiCIEViews",
    "ViewParameters",
    "RandColorJitter",
    "RandColorJitterd",
    "RandGaussianBlur",
    "RandGaussianBlurd",
    "RandGrayscale",
    "RandGrayscaled",
    "RandSolarize",
    "RandSolarized",
    "BinarizeMaskd",
    "RedChannelNormalize",
    "RedChannelNormalized",
    "ClustersToClassesd",
    "SaveClusterMapd",
    "SaveMaskAndOverlayd",
    "TileSlide",
    "TileSlided",
    "mask_reader",
    "overlay",
    "rgb_reader",
    "tile_array",
    "tile_boxes",
    "to_gray",
    "to_rgb",
]
