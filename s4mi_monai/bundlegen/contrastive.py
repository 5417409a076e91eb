"""Configs of the semi-supervised contrastive segmentation bundles (Hu et al., MICCAI 2021): three stages.

``train.json`` holds a ``global`` section (stage 1: SimCLR on every training image, never validation or test),
a ``local`` section (stage 2: the pixel-wise contrastive loss on the labeled images of ``--label_fraction``, two
intensity-only views) and, at the root, the supervised fine-tuning of :mod:`s4mi_monai.bundlegen.supervised`
(stage 3: cross-entropy + Dice on the same labeled images), started from the previous stage's weights.
``--pretraining`` picks the stages (the paper's ablation): ``global_local`` (default), ``global_unsupervised_local``
(what the released code really ran), ``global``, ``none`` (the supervised baseline with this network and recipe).
Run ids: ``pretrain_global``, ``pretrain_local``, ``finetune``, ``training`` (= ``run``: the stages, a finished
stage skipped and said so, then the test report) and ``benchmark``.
"""

from __future__ import annotations

from typing import Any

from s4mi_monai.bundlegen import parts, supervised
from s4mi_monai.bundlegen.registry import BundleSpec

STAGES = {"global": "GlobalContrastiveTrainer", "local": "LocalContrastiveTrainer"}


def _knobs(spec: BundleSpec) -> dict[str, Any]:
    """The run knobs of the fine-tuning (the reference's: Adam 5e-4, batch 8), then the two pretraining stages'."""
    knobs = parts.run_knobs(spec, label_fraction=0.1, max_epochs="$4 if @demo else 120")
    knobs.update({"architecture": "contrastive_unet", "batch_size": "$4 if @demo else 8", "learning_rate": 5e-4, "weight_decay": 0.0})
    return {
        **knobs,
        "pretraining": "global_local",
        "global_epochs": "$2 if @demo else 100",
        "global_batch_size": "$8 if @demo else 64",
        "global_lr": 3e-4,
        "global_weight_decay": 1e-5,
        "global_temperature": 0.5,
        "local_epochs": "$2 if @demo else 60",
        "local_batch_size": 4,
        "local_lr": 1e-4,
        "local_weight_decay": 1e-4,
        "local_temperature": 0.1,
        "local_sampling": "stride",
        "local_stride": 4,
        "local_block_size": "$16 if @demo else 32",
        "anchor_background": False,
        "pixel_loss_chunk": 1024,
        "pretrained_global_backbone": "$os.path.join(@output_dir, 'pretrained_global_backbone.pt')",
        "pretrained_local_backbone": "$os.path.join(@output_dir, 'pretrained_local_backbone.pt')",
        "channels_last": "$@torch_device.type == 'cuda'",
        "benchmark_steps": 20,
    }


def _stage(stage: str, items: str, preprocessing: Any, views: str, head: dict[str, Any], loss: dict[str, Any]) -> dict[str, Any]:
    """One pretraining stage: its data, network (started from the previous stage), head, optimiser and trainer."""
    ref = f"@{stage}#"
    return {
        "preprocessing": preprocessing,
        "dataset": {
            "_target_": "CacheDataset",
            "data": items,
            "transform": f"$monai.transforms.Compose({ref}preprocessing + {views})",
            "cache_rate": 1.0,
            "progress": False,
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": f"{ref}dataset",
            "batch_size": f"$min(@{stage}_batch_size, len({ref}dataset))",
            "shuffle": True,
            "drop_last": stage == "global",  # NT-Xent needs at least two images per batch
            "num_workers": "@num_workers",
        },
        "network_def": {"_target_": "$@s4mi_monai.networks.build_contrastive_network", "name": "@architecture"},
        "network": f"$@s4mi_monai.bundle.to_device({ref}network_def, @torch_device, @channels_last)",
        "head": head,
        "loss": loss,
        "optimizer": {
            "_target_": "torch.optim.Adam",
            "params": f"$list({ref}network.parameters()) + list({ref}head.parameters())",
            "lr": f"@{stage}_lr",
            "weight_decay": f"@{stage}_weight_decay",
        },
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "optimizer": f"{ref}optimizer",
            "T_max": f"$@{stage}_epochs * len({ref}dataloader)",
        },
        "history": {
            "_target_": "$@s4mi_monai.handlers.EpochHistory",
            "output_dir": f"$os.path.join(@output_dir, 'pretraining_{stage}')",
            "optimizer": f"{ref}optimizer",
        },
        "random_state": parts.random_state(f"{ref}dataset"),
        "checkpoint_path": f"$os.path.join(@output_dir, 'pretraining_{stage}_checkpoint.pt')",
        "run_handlers": parts.run_handlers(f"{ref}history", f"{ref}checkpoint_path", f"{ref}resume_objects"),
        "handlers": [
            {"_target_": "LrScheduleHandler", "lr_scheduler": f"{ref}lr_scheduler", "print_lr": False, "epoch_level": False},
            *parts.logging_handlers(f"$os.path.join(@output_dir, 'pretraining_{stage}', 'runs')", f"{stage}_loss", "$lambda output: output['loss']"),
        ],
        "resume_objects": {
            "network": f"{ref}network",
            "head": f"{ref}head",
            "optimizer": f"{ref}optimizer",
            "lr_scheduler": f"{ref}lr_scheduler",
            "trainer": f"{ref}trainer",
            "history": f"{ref}history",
            "random_state": f"{ref}random_state",
        },
        "trainer": {
            "_target_": f"$@s4mi_monai.engines.{STAGES[stage]}",
            "device": "@torch_device",
            "max_epochs": f"@{stage}_epochs",
            "train_data_loader": f"{ref}dataloader",
            "network": f"{ref}network",
            "projection_head": f"{ref}head",
            "optimizer": f"{ref}optimizer",
            "loss_function": f"{ref}loss",
            "amp": "@use_amp",
            "channels_last": "$@s4mi_monai.bundle.as_bool(@channels_last)",
            "train_handlers": f"{ref}handlers",
        },
    }


def _global_section(spec: BundleSpec) -> dict[str, Any]:
    """Stage 1: every training image (no label), two views with intensity and spatial draws, NT-Xent."""
    image_only = parts.preprocessing(spec, with_label=False)
    head = {"_target_": "$@s4mi_monai.networks.GlobalProjectionHead", "in_channels": "$@global#network.global_channels"}
    loss = {"_target_": "$@s4mi_monai.losses.NTXentLoss", "temperature": "@global_temperature"}
    items = "$@s4mi_monai.bundle.unlabeled_items(@data, 'training')"
    return _stage("global", items, image_only, "@s4mi_monai.transforms.global_contrastive_transforms()", head, loss)


def _local_section(spec: BundleSpec) -> dict[str, Any]:
    """Stage 2: the labeled images of the fraction with their masks, two intensity-only views, the pixel loss."""
    head = {"_target_": "$@s4mi_monai.networks.LocalProjectionHead", "in_channels": "$@local#network.pixel_channels"}
    loss = {
        "_target_": "$@s4mi_monai.losses.SupervisedPixelContrastiveLoss",
        "temperature": "@local_temperature",
        "sampling": "@local_sampling",
        "stride": "@local_stride",
        "block_size": "@local_block_size",
        "anchor_background": "$@s4mi_monai.bundle.as_bool(@anchor_background)",
        "supervised": "$@pretraining != 'global_unsupervised_local'",
        "chunk_size": "@pixel_loss_chunk",
    }
    items = parts.items(spec, "training", "@label_fraction")
    return _stage("local", items, "@preprocessing", "@s4mi_monai.transforms.local_contrastive_transforms()", head, loss)


def _pretrain(stage: str, after_load: str | None, skip_if_done: bool) -> list[str]:
    """Start the stage from the previous one (if any), train it, save its network; skipped when ``--pretraining`` leaves it out."""
    enabled = f"@s4mi_monai.bundle.contrastive_stage(@pretraining, '{stage}')"
    skip = ", skip_if_done=True" if skip_if_done else ""
    steps = [f"$@s4mi_monai.bundle.load_stage_weights(@{stage}#network, {after_load}, 'encoder') if {enabled} else None"] if after_load else []
    steps.append(
        f"$@s4mi_monai.bundle.pretrain(@{stage}#trainer, @{stage}#run_handlers, [(@{stage}#network, @pretrained_{stage}_backbone)]{skip}) "
        f"if {enabled} else None"
    )
    return steps


def contrastive_train_config(spec: BundleSpec) -> dict[str, Any]:
    """``train.json`` of a contrastive segmentation bundle."""
    transforms = supervised.transforms(spec)
    transforms["augmentation"] = "$@s4mi_monai.transforms.contrastive_finetune_transforms()"
    transforms["normalization"] = []  # the three stages see [0, 1] images, as the contrastive stages do
    finetune = [
        "$@s4mi_monai.bundle.load_stage_weights(@network, *@s4mi_monai.bundle.finetuning_start(@pretraining, "
        "@pretrained_global_backbone, @pretrained_local_backbone))",
        *supervised.training_steps(),
    ]
    global_steps = _pretrain("global", None, skip_if_done=True)
    local_steps = _pretrain("local", "@pretrained_global_backbone", skip_if_done=True)
    return {
        **parts.identity(spec),
        **_knobs(spec),
        **parts.data_and_device(),
        **parts.output_paths(),
        **supervised.model_objects(spec, pretrained_weights=None),
        # the stages' class (same parameter names as the plain network that evaluate.json and inference.json build),
        # so that fine-tuning can take the encoder or the features of a stage's output
        "network_def": {"_target_": "$@s4mi_monai.networks.build_contrastive_network", "name": "@architecture", "out_channels": 2},
        **transforms,
        "global": _global_section(spec),
        "local": _local_section(spec),
        **supervised.training_objects(spec, extra_settings={"pretraining": _pretraining_settings()}),
        "initialize": [*supervised.initialize(spec), "$@s4mi_monai.bundle.contrastive_stage(@pretraining, 'global')"],
        "pretrain_global": _pretrain("global", None, skip_if_done=False),
        "pretrain_local": _pretrain("local", "@pretrained_global_backbone", skip_if_done=False),
        "finetune": finetune,
        "run": [*global_steps, *local_steps, *finetune],
        "training": "%run",
        # one stage per process (run benchmark_global, benchmark_local, benchmark_finetune) isolates its memory peak
        **{f"benchmark_{stage}": [f"$@s4mi_monai.engines.benchmark(@{stage}#trainer, '{stage}_contrastive', @benchmark_steps)"] for stage in STAGES},
        "benchmark_finetune": ["$@s4mi_monai.engines.benchmark(@train#trainer, 'finetune', @benchmark_steps)"],
        "benchmark": [f"%benchmark_{stage}#0" for stage in (*STAGES, "finetune")],
    }


def _pretraining_settings() -> dict[str, str]:
    names = [
        "pretraining",
        "global_epochs",
        "global_batch_size",
        "global_lr",
        "global_temperature",
        "local_epochs",
        "local_batch_size",
        "local_lr",
        "local_temperature",
        "local_sampling",
        "local_stride",
        "local_block_size",
        "anchor_background",
    ]
    return {name: f"@{name}" for name in names}


def _without_normalization(steps: list[Any]) -> list[Any]:
    return [step for step in steps if step not in parts.normalization()]


def contrastive_evaluate_config(spec: BundleSpec) -> dict[str, Any]:
    """``evaluate.json``: the supervised evaluation on [0, 1] images, the network read from ``model_info.json``."""
    config = supervised.evaluate_config(spec)
    config["normalization"] = []
    config["model_info"]["defaults"]["architecture"] = "contrastive_unet"
    return config


def contrastive_inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``inference.json``: masks and overlays of new images, prepared as in training ([0, 1], no ImageNet normalisation)."""
    config = supervised.inference_config(spec)
    config["preprocessing"]["transforms"] = _without_normalization(config["preprocessing"]["transforms"])
    config["model_info"]["defaults"]["architecture"] = "contrastive_unet"
    return config
