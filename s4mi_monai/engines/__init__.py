"""Trainers, one per learning paradigm (MONAI ``SupervisedTrainer`` subclasses), and the throughput benchmark."""

from s4mi_monai.engines.benchmark import benchmark
from s4mi_monai.engines.self_supervised import CASSTrainer, DINOTrainer, SelfSupervisedTrainer

__all__ = ["CASSTrainer", "DINOTrainer", "SelfSupervisedTrainer", "benchmark"]
