"""Ignite handlers for the bundles: crash-safe checkpoints and resume, per-epoch history, prediction CSVs.

Bundle configs list them as ``{"_target_": "s4mi_monai.handlers.<Name>", ...}`` among the handlers of a
MONAI ``SupervisedTrainer``/``SupervisedEvaluator``, which calls their ``attach(engine)``.
"""

from s4mi_monai.handlers.checkpoint import BestModelSaver, TorchRandomState, TrainingCheckpoint
from s4mi_monai.handlers.history import EpochHistory, write_metrics_json
from s4mi_monai.handlers.predictions import ProbabilityCSVWriter

__all__ = [
    "BestModelSaver",
    "EpochHistory",
    "ProbabilityCSVWriter",
    "TorchRandomState",
    "TrainingCheckpoint",
    "write_metrics_json",
]
