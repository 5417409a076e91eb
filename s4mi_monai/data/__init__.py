"""Datasets: preparation into datalists, splits, label fractions, up-front checks and demo data.

All dataset-specific knowledge of s4mi_monai lives in this sub-package.
"""

from s4mi_monai.data.check import MIN_IMAGE_SIDE, CheckedFiles, CheckReport, DatasetError, Problem, check_items
from s4mi_monai.data.datalist import (
    build_datalist,
    check_datalist,
    labeled_subset,
    load_datalist,
    save_datalist,
    split_items,
    verify_datalist,
)
from s4mi_monai.data.dermofit import prepare_dermofit
from s4mi_monai.data.isic2017 import prepare_isic2017
from s4mi_monai.data.sampling import TwoStreamBatchSampler, two_stream_collate
from s4mi_monai.data.splits import DEFAULT_LABEL_FRACTIONS, SPLITS, assign_splits, fraction_key, label_fraction_subsets
from s4mi_monai.data.table import prepare_csv

__all__ = [
    "DEFAULT_LABEL_FRACTIONS",
    "SPLITS",
    "CheckReport",
    "DatasetError",
    "Problem",
    "assign_splits",
    "build_datalist",
    "check_datalist",
    "verify_datalist",
    "CheckedFiles",
    "MIN_IMAGE_SIDE",
    "check_items",
    "fraction_key",
    "label_fraction_subsets",
    "labeled_subset",
    "load_datalist",
    "prepare_csv",
    "prepare_dermofit",
    "prepare_isic2017",
    "save_datalist",
    "split_items",
    "TwoStreamBatchSampler",
    "two_stream_collate",
]
