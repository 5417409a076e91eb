"""Trainers, one per learning paradigm (MONAI ``SupervisedTrainer`` subclasses), and the throughput benchmark."""

from s4mi_monai.engines.base import CustomIterationTrainer
from s4mi_monai.engines.benchmark import benchmark
from s4mi_monai.engines.random_state import TorchRandomState
from s4mi_monai.engines.self_supervised import CASSTrainer, DINOTrainer, SelfSupervisedTrainer
from s4mi_monai.engines.semi_supervised import CrossTeachingTrainer

__all__ = ["CASSTrainer", "CrossTeachingTrainer", "CustomIterationTrainer", "DINOTrainer", "SelfSupervisedTrainer", "TorchRandomState", "benchmark"]
