"""Losses of s4mi_monai, one module per family, each formula in its docstring."""

from s4mi_monai.losses.classification import LOSS_KINDS, ClassificationLoss, classification_loss, inverse_frequency_weights

__all__ = ["LOSS_KINDS", "ClassificationLoss", "classification_loss", "inverse_frequency_weights"]
