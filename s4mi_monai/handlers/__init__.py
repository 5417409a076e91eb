"""Ignite handlers for the bundles: crash-safe checkpoints and resume, per-epoch history, prediction CSVs.

Bundle configs list them as ``{"_target_": "s4mi_monai.handlers.<Name>", ...}`` among the handlers of a
MONAI ``SupervisedTrainer``/``SupervisedEvaluator``, which calls their ``attach(engine)``.
"""

from s4mi_monai.handlers.checkpoint import BestModelSaver, TrainingCheckpoint
from s4mi_monai.handlers.clustering import PiCIEClustering
from s4mi_monai.handlers.history import EpochHistory
from s4mi_monai.handlers.monitoring import CollapseMonitor, RepresentationCollapse, output_similarity
from s4mi_monai.handlers.predictions import ProbabilityCSVWriter
from s4mi_monai.handlers.schedules import ScheduleHandler
from s4mi_monai.handlers.teacher import EMATeacher, FreezeLastLayer

__all__ = [
    "CollapseMonitor",
    "RepresentationCollapse",
    "output_similarity",
    "ScheduleHandler",
    "FreezeLastLayer",
    "EMATeacher",
    "PiCIEClustering",
    "BestModelSaver",
    "EpochHistory",
    "ProbabilityCSVWriter",
    "TrainingCheckpoint",
]
