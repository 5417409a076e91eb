"""Trainers, one per learning paradigm (MONAI ``SupervisedTrainer`` subclasses), and the throughput benchmark."""

from s4mi_monai.engines.base import CustomIterationTrainer
from s4mi_monai.engines.benchmark import benchmark
from s4mi_monai.engines.contrastive import GlobalContrastiveTrainer, LocalContrastiveTrainer
from s4mi_monai.engines.random_state import TrainingRandomState
from s4mi_monai.engines.self_supervised import CASSTrainer, DINOTrainer, SelfSupervisedTrainer
from s4mi_monai.engines.semi_supervised import CrossTeachingTrainer
from s4mi_monai.engines.unsupervised import PiCIETrainer, benchmark_clustering, fit_final_centroids, match_clusters

__all__ = [
    "CASSTrainer",
    "CrossTeachingTrainer",
    "CustomIterationTrainer",
    "DINOTrainer",
    "GlobalContrastiveTrainer",
    "LocalContrastiveTrainer",
    "PiCIETrainer",
    "SelfSupervisedTrainer",
    "TrainingRandomState",
    "benchmark",
    "benchmark_clustering",
    "fit_final_centroids",
    "match_clusters",
]
