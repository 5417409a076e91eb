"""``configs/multi_gpu_train.json``: the model-zoo overlay that runs ``train.json`` under torchrun (DDP).

Laid over ``train.json`` (``--config_file "['configs/train.json','configs/multi_gpu_train.json']"``), it joins
the process group (NCCL on GPUs, gloo on CPUs), wraps the trained network in ``DistributedDataParallel``,
gives every rank its share of each epoch, keeps validation and logging on rank 0 and scores validation and
test there with the unwrapped network. What else holds: :mod:`s4mi_monai.distributed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s4mi_monai.bundlegen.registry import BundleSpec

SEED_PER_RANK = "$monai.utils.set_determinism(seed=@seed + @s4mi_monai.distributed.launch_rank())"
"""Augmentation seeded per rank (``initialize#0`` of every ``train.json``); the networks start equal all the same."""


RANKS = {"num_replicas": "$@s4mi_monai.distributed.launch_world_size()", "rank": "$@s4mi_monai.distributed.launch_rank()"}
"""A sampler's share, from torchrun's environment: right whichever config item happens to be built first."""


def sampler(dataset: str) -> dict[str, Any]:
    """Each rank's share of an epoch of ``dataset``, shuffled alike on every rank (same ``seed``)."""
    return {"_target_": "DistributedSampler", "dataset": dataset, "shuffle": True, "even_divisible": True, "seed": "@seed", **RANKS}


def _process_group() -> dict[str, Any]:
    """Seeds, the device of this rank, ``sync_batchnorm`` and leaving the group at the end: every overlay's."""
    return {
        "sync_batchnorm": False,
        "initialize#0": SEED_PER_RANK,
        "torch_device": "$@s4mi_monai.distributed.initialize(@device)",
        "finalize": ["$@s4mi_monai.distributed.shutdown()"],
    }


def _wrapped(expression: str) -> str:
    """``$...`` building a network on ``@torch_device``, in DDP."""
    return f"$@s4mi_monai.distributed.wrap({expression.removeprefix('$')}, @torch_device, @sync_batchnorm)"


def _scored_unwrapped(sections: dict[str, str]) -> dict[str, str]:
    """Evaluator section -> the network it scores: rank 0 scores it unwrapped."""
    return {f"{section}#evaluator#network": f"$@s4mi_monai.distributed.unwrap({network})" for section, network in sections.items()}


def _supervised(scope: str = "") -> dict[str, Any]:
    """A supervised training section (``network``, ``train``, ``validate``, ``test``) at the root or in ``scope``."""
    at = f"{scope}#" if scope else ""
    return {
        f"{at}network": _wrapped(f"@{at}network_def"),
        f"{at}train#sampler": sampler(f"@{at}train#dataset"),
        f"{at}train#dataloader#sampler": f"@{at}train#sampler",
        f"{at}train#dataloader#shuffle": False,
        f"{at}train#trainer#train_handlers": f"$@s4mi_monai.distributed.main_process_handlers(@{at}train#handlers)",
        **_scored_unwrapped({f"{at}validate": f"@{at}network", f"{at}test": f"@{at}network"}),
    }


def supervised_multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """The overlay of a supervised bundle (one network, MONAI's ``SupervisedTrainer``)."""
    return {**_process_group(), **_supervised()}


def _pretraining_data(section: str = "ssl", extra_handlers: str = "", batch_size: str = "@pretrain_batch_size") -> dict[str, Any]:
    """The loader of a pretraining stage (``ssl#``, ``picie#``, ``global#``): each rank's share of the images;
    ``extra_handlers`` (an expression of a list) join the trainer's handlers on every rank."""
    return {
        f"{section}#sampler": sampler(f"@{section}#dataset"),
        f"{section}#dataloader#sampler": f"@{section}#sampler",
        f"{section}#dataloader#shuffle": False,
        f"{section}#dataloader#batch_size": f"$min({batch_size}, len(@{section}#sampler))",
        f"{section}#trainer#train_handlers": f"$@s4mi_monai.distributed.main_process_handlers(@{section}#handlers)" + extra_handlers,
    }


def dino_multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """DINO: the student in DDP, the EMA teacher a plain copy on every rank (the centre is all-reduced by the loss),
    and the official linear learning-rate rule applied to the global batch (``pretrain_batch_size`` x ranks)."""
    return {
        **_process_group(),
        **_supervised(),
        **_pretraining_data(),
        "pretrain_lr": "$0.0005 * @pretrain_batch_size * @s4mi_monai.distributed.launch_world_size() / 256",
        "ssl#student": _wrapped("@s4mi_monai.bundle.to_device(@ssl#student_def, @torch_device, @channels_last)"),
        "ssl#teacher": "$copy.deepcopy(@s4mi_monai.distributed.unwrap(@ssl#student))",
    }


def crossteach_multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """Cross teaching: both networks in DDP; the two-stream sampler gives each rank its block of every global batch."""
    return {
        **_process_group(),
        "network": _wrapped("@s4mi_monai.bundle.to_device(@network_def, @torch_device, @channels_last)"),
        "transformer_network": _wrapped("@transformer_def"),
        **{f"train#sampler#{name}": value for name, value in RANKS.items()},
        "train#trainer#train_handlers": "$@s4mi_monai.distributed.main_process_handlers(@train#handlers)",
        **_scored_unwrapped(
            {
                "validate": "@network",
                "validate_transformer": "@transformer_network",
                "test": "@network",
                "test_transformer": "@transformer_network",
            }
        ),
    }


def cass_multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """CASS: both networks in DDP while pretraining, then each fine-tuning as a supervised run. The opt-in predictors
    (the stabiliser) are called outside the networks, so their gradients are averaged over ranks by a handler."""
    return {
        **_process_group(),
        **_pretraining_data(extra_handlers=" + [@s4mi_monai.distributed.GradientAverage(@ssl#predictors)]"),
        "ssl#cnn": _wrapped("@s4mi_monai.bundle.to_device(@ssl#cnn_def, @torch_device, @channels_last)"),
        "ssl#transformer": _wrapped("@ssl#transformer_def"),
        **_supervised("finetune_cnn"),
        **_supervised("finetune_transformer"),
    }


def picie_multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """PiCIE: the network in DDP, each rank clustering its share of the images into centroids shared by all (the
    k-means adds up every rank's statistics); rank 0 fits the final centroids and scores; fine-tuning as supervised."""
    return {
        **_process_group(),
        **_pretraining_data("picie"),
        "picie#network": _wrapped("@s4mi_monai.bundle.to_device(@picie#network_def, @torch_device, @channels_last)"),
        **_supervised("supervised"),
    }


def contrastive_multi_gpu_config(spec: BundleSpec) -> dict[str, Any]:
    """Contrastive segmentation: the pretraining stages average their gradients over ranks in the trainers (they call
    the network's ``encode_global``/``pixel_features``, which DDP does not see) and stage 1 contrasts against every
    rank's views; the fine-tuning is a supervised section in DDP."""
    return {
        **_process_group(),
        **_pretraining_data("global", batch_size="@global_batch_size"),
        **_pretraining_data("local", batch_size="@local_batch_size"),
        **_supervised(),
    }


BUILDERS: dict[str, Callable[[BundleSpec], dict[str, Any]]] = {
    "supervised_cls": supervised_multi_gpu_config,
    "supervised_seg": supervised_multi_gpu_config,
    "dino": dino_multi_gpu_config,
    "cass": cass_multi_gpu_config,
    "crossteach_seg": crossteach_multi_gpu_config,
    "picie_seg": picie_multi_gpu_config,
    "contrast_seg": contrastive_multi_gpu_config,
}
"""The overlay of each method (every method of the package) for torchrun."""
