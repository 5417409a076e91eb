"""Configs of the self-supervised classification bundles (DINO, CASS): label-free pretraining, then fine-tuning.

``train.json`` holds the supervised fine-tuning of :mod:`s4mi_monai.bundlegen.supervised` unchanged
(CASS: once per network, in the sections ``finetune_cnn`` and ``finetune_transformer``, on the loaders of
the root's ``validate`` and ``test`` sections) plus an ``ssl`` section
with the pretraining objects. Run ids: ``pretrain`` (pretraining only, writes the pretrained backbone),
``finetune`` (from ``--pretrained``), ``training`` / ``run`` (both, then the test report; a finished
pretraining is not repeated when a killed run is started again) and ``benchmark``.
"""

from __future__ import annotations

from typing import Any

from s4mi_monai.bundlegen import parts, supervised
from s4mi_monai.bundlegen.parts import ROOT, Scope
from s4mi_monai.bundlegen.registry import BundleSpec

CASS_BRANCHES = {"cnn": "@cnn_backbone", "transformer": "@transformer_backbone"}
"""CASS's two networks, each fine-tuned in its own section ``finetune_<branch>``, and their backbone knobs."""


def _pretraining_knobs(spec: BundleSpec) -> dict[str, Any]:
    """Official DINO defaults (methods.md 1.2.a) or the CASS notebook recipe (1.3); demo-sized without a datalist."""
    common = {
        "pretrain_epochs": "$3 if @demo else 100",
        "pretrain_max_iterations": None,
        "pretrain_batch_size": "$16 if @demo else 64" if spec.method == "dino" else 16,
        "pretrain_image_size": "@image_size",
        "channels_last": "$@torch_device.type == 'cuda'",
        "compile": False,
        "benchmark_steps": 20,
        # CASS from random initialisation collapses within a few dozen steps: a real run stops, the demo (a smoke test) warns
        "on_constant_collapse": "$'warn' if @demo else 'stop'" if spec.method == "cass" else "warn",
    }
    if spec.method == "cass":
        return {
            "cnn_backbone": "$'resnet18' if @demo else 'resnet50'",
            "transformer_backbone": "$'vit_ti16' if @demo else 'vit_b16'",
            "report_branch": "cnn",
            "projection_dim": 1000,
            "stabiliser": "none",
            "pretrain_lr": 1e-3,
            "pretrain_min_lr": 1e-6,
            "pretrained_cnn_backbone": "$os.path.join(@output_dir, 'pretrained_cnn_backbone.pt')",
            "pretrained_transformer_backbone": "$os.path.join(@output_dir, 'pretrained_transformer_backbone.pt')",
            **common,
        }
    return {
        "pretrained_backbone": "$os.path.join(@output_dir, 'pretrained_backbone.pt')",
        "pretrain_optimizer": "adamw",
        "pretrain_lr": "$0.0005 * @pretrain_batch_size / 256",
        "pretrain_min_lr": 1e-6,
        "pretrain_warmup_epochs": "$min(10, @ssl#epochs // 3)",
        "pretrain_weight_decay": 0.04,
        "pretrain_weight_decay_end": 0.4,
        "teacher_momentum": 0.996,
        "student_temp": 0.1,
        "warmup_teacher_temp": 0.04,
        "teacher_temp": 0.07,
        "warmup_teacher_temp_epochs": "$min(30, @ssl#epochs)",
        "center_momentum": 0.9,
        "head_out_dim": "$1024 if @demo else 65536",
        "head_hidden_dim": "$512 if @demo else 2048",
        "head_bottleneck_dim": 256,
        "head_layers": 3,
        "crop_preset": "dino",
        "local_crop_size": "$max(16, @pretrain_image_size * 3 // 7 // 16 * 16)",
        "n_local_crops": "$2 if @demo else 8",
        "global_crop_scale": [0.4, 1.0],
        "local_crop_scale": [0.05, 0.4],
        "blur_sigma": [0.1, 2.0],
        "student_sees_globals": True,
        "clip_grad": 3.0,
        "freeze_last_layer": 1,
        **common,
    }


def _ssl_data() -> dict[str, Any]:
    """Every training image, labeled or not (never validation or test), decoded once and cached as uint8."""
    return {
        "preprocessing": parts.uint8_images("$@pretrain_image_size * 8 // 7"),
        "dataset": {
            "_target_": "CacheDataset",
            "data": "$@s4mi_monai.bundle.unlabeled_items(@data, 'training')",
            "transform": "$monai.transforms.Compose(@ssl#preprocessing)",
            "cache_rate": 1.0,
            "progress": False,
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@ssl#dataset",
            "batch_size": "$min(@pretrain_batch_size, len(@ssl#dataset))",
            "shuffle": True,
            "drop_last": True,
            "num_workers": "@num_workers",
            "pin_memory": "$@torch_device.type == 'cuda'",
        },
        "iterations_per_epoch": "$len(@ssl#dataloader)",
        "epochs": "$@s4mi_monai.bundle.epochs_for_iterations(@pretrain_max_iterations, @pretrain_epochs, @ssl#iterations_per_epoch)",
        "normalize": {
            "_target_": "$@s4mi_monai.transforms.NormalizeBatch",
            "red_normalization": "$@s4mi_monai.bundle.as_bool(@red_normalization)",
        },
    }


def _ssl_common_handlers(checkpoint: str, resume_objects: dict[str, str]) -> dict[str, Any]:
    return {
        "history": {
            "_target_": "$@s4mi_monai.handlers.EpochHistory",
            "output_dir": "$os.path.join(@output_dir, 'pretraining')",
            "optimizer": "@ssl#optimizer",
        },
        "random_state": parts.random_state("@ssl#dataset"),
        "checkpoint_path": f"$os.path.join(@output_dir, '{checkpoint}')",
        "run_handlers": parts.run_handlers("@ssl#history", "@ssl#checkpoint_path", "@ssl#resume_objects"),
        "resume_objects": {**resume_objects, "trainer": "@ssl#trainer", "history": "@ssl#history", "random_state": "@ssl#random_state"},
    }


def _monitoring(out_dim: str | None) -> list[dict[str, Any]]:
    return [
        {"_target_": "$@s4mi_monai.handlers.CollapseMonitor", "out_dim": out_dim, "on_constant_collapse": "@on_constant_collapse"},
        *parts.logging_handlers("$os.path.join(@output_dir, 'pretraining', 'runs')", "pretrain_loss", "$lambda output: output['loss']"),
    ]


def _dino_section() -> dict[str, Any]:
    head = {
        "_target_": "$@s4mi_monai.networks.DINOHead",
        "in_dim": "$@ssl#backbone.embed_dim",
        "out_dim": "@head_out_dim",
        "hidden_dim": "@head_hidden_dim",
        "bottleneck_dim": "@head_bottleneck_dim",
        "n_layers": "@head_layers",
    }
    epochs, iters = "@ssl#epochs", "@ssl#iterations_per_epoch"
    return {
        **_ssl_data(),
        "backbone": {"_target_": "$@s4mi_monai.networks.build_backbone", "name": "@backbone", "image_size": "@pretrain_image_size"},
        "student_def": {
            "_target_": "$@s4mi_monai.networks.MultiCropWrapper",
            "backbone": "$@s4mi_monai.bundle.with_weights(@ssl#backbone, @pretrained_weights)",
            "head": head,
        },
        "student": "$@s4mi_monai.bundle.to_device(@ssl#student_def, @torch_device, @channels_last)",
        "teacher": "$copy.deepcopy(@ssl#student)",
        "loss": {
            "_target_": "$@s4mi_monai.losses.DINOLoss",
            "out_dim": "@head_out_dim",
            "student_temp": "@student_temp",
            "center_momentum": "@center_momentum",
        },
        "optimizer": {
            "_target_": "$@s4mi_monai.optim.pretraining_optimizer",
            "name": "@pretrain_optimizer",
            "params": "$@s4mi_monai.optim.param_groups_for_weight_decay(@ssl#student)",
            "lr": "@pretrain_lr",
            "fused": "$@torch_device.type == 'cuda'",
        },
        "lr_schedule": f"$@s4mi_monai.optim.cosine_schedule(@pretrain_lr, @pretrain_min_lr, {epochs}, {iters}, @pretrain_warmup_epochs)",
        "weight_decay_schedule": f"$@s4mi_monai.optim.cosine_schedule(@pretrain_weight_decay, @pretrain_weight_decay_end, {epochs}, {iters})",
        "momentum_schedule": f"$@s4mi_monai.optim.cosine_schedule(@teacher_momentum, 1.0, {epochs}, {iters})",
        "teacher_temp_schedule": f"$@s4mi_monai.optim.linear_warmup_then_constant(@warmup_teacher_temp, @teacher_temp, @warmup_teacher_temp_epochs, {epochs}, {iters})",
        "views": {
            "_target_": "$@s4mi_monai.transforms.MultiCropBatch",
            "preset": "@crop_preset",
            "global_size": "@pretrain_image_size",
            "local_size": "$None if @crop_preset == 'lucidrains' else @local_crop_size",
            "n_local": "@n_local_crops",
            "global_scale": "@global_crop_scale",
            "local_scale": "@local_crop_scale",
            "blur_sigma": "$None if @crop_preset == 'lucidrains' else @blur_sigma",
        },
        "handlers": [
            {
                "_target_": "$@s4mi_monai.handlers.ScheduleHandler",
                "values": "@ssl#lr_schedule",
                "optimizer": "@ssl#optimizer",
                "param_key": "lr",
            },
            {
                "_target_": "$@s4mi_monai.handlers.ScheduleHandler",
                "values": "@ssl#weight_decay_schedule",
                "optimizer": "@ssl#optimizer",
                "param_key": "weight_decay",
            },
            {"_target_": "$@s4mi_monai.handlers.ScheduleHandler", "values": "@ssl#teacher_temp_schedule", "attribute": "teacher_temp"},
            {
                "_target_": "$@s4mi_monai.handlers.EMATeacher",
                "student": "@ssl#student",
                "teacher": "@ssl#teacher",
                "momentum": "@ssl#momentum_schedule",
                "copy_buffers": False,
            },
            {"_target_": "$@s4mi_monai.handlers.FreezeLastLayer", "module": "@ssl#student", "epochs": "@freeze_last_layer"},
            *_monitoring("@head_out_dim"),
        ],
        **_ssl_common_handlers(
            "pretraining_checkpoint.pt",
            {"student": "@ssl#student", "teacher": "@ssl#teacher", "loss": "@ssl#loss", "optimizer": "@ssl#optimizer"},
        ),
        "trainer": {
            "_target_": "$@s4mi_monai.engines.DINOTrainer",
            "device": "@torch_device",
            "max_epochs": "@ssl#epochs",
            "train_data_loader": "@ssl#dataloader",
            "network": "@ssl#student",
            "teacher": "@ssl#teacher",
            "optimizer": "@ssl#optimizer",
            "loss_function": "@ssl#loss",
            "views": "@ssl#views",
            "normalize": "@ssl#normalize",
            "teacher_temp": "@warmup_teacher_temp",
            "clip_grad": "@clip_grad",
            "student_sees_globals": "$@s4mi_monai.bundle.as_bool(@student_sees_globals)",
            "amp": "@use_amp",
            "channels_last": "$@s4mi_monai.bundle.as_bool(@channels_last)",
            "compile": "$@s4mi_monai.bundle.as_bool(@compile)",
            "train_handlers": "@ssl#handlers",
        },
    }


def _cass_section() -> dict[str, Any]:
    def network(branch: str) -> dict[str, Any]:
        return {
            "_target_": "$@s4mi_monai.networks.MultiCropWrapper",
            "backbone": f"@ssl#{branch}_encoder",
            "head": {
                "_target_": "$@s4mi_monai.networks.ProjectionHead",
                "in_dim": f"$@ssl#{branch}_encoder.embed_dim",
                "out_dim": "@projection_dim",
            },
        }

    def schedule(optimizer: str) -> dict[str, Any]:
        return {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "optimizer": optimizer,
            "T_max": "$@ssl#epochs * @ssl#iterations_per_epoch",
            "eta_min": "@pretrain_min_lr",
        }

    return {
        **_ssl_data(),
        "cnn_encoder": "$@s4mi_monai.bundle.with_weights(@s4mi_monai.networks.build_backbone(@cnn_backbone, @pretrain_image_size), @pretrained_weights)",
        "transformer_encoder": "$@s4mi_monai.networks.build_backbone(@transformer_backbone, @pretrain_image_size)",
        "cnn_def": network("cnn"),
        "cnn": "$@s4mi_monai.bundle.to_device(@ssl#cnn_def, @torch_device, @channels_last)",
        "transformer_def": network("transformer"),
        "transformer": "$@ssl#transformer_def.to(@torch_device)",
        "predictors": "$@s4mi_monai.bundle.cass_predictors(@stabiliser, @projection_dim).to(@torch_device)",
        "optimizer": {
            "_target_": "torch.optim.Adam",
            "params": "$@s4mi_monai.bundle.branch_parameters(@ssl#cnn, @ssl#predictors, 'cnn')",
            "lr": "@pretrain_lr",
            "fused": "$@torch_device.type == 'cuda'",
        },
        "transformer_optimizer": {
            "_target_": "torch.optim.Adam",
            "params": "$@s4mi_monai.bundle.branch_parameters(@ssl#transformer, @ssl#predictors, 'transformer')",
            "lr": "@pretrain_lr",
            "fused": "$@torch_device.type == 'cuda'",
        },
        "lr_scheduler": schedule("@ssl#optimizer"),
        "transformer_lr_scheduler": schedule("@ssl#transformer_optimizer"),
        "views": {"_target_": "$@s4mi_monai.transforms.MultiCropBatch", "preset": "cass", "global_size": "@pretrain_image_size"},
        "handlers": [
            {"_target_": "LrScheduleHandler", "lr_scheduler": "@ssl#lr_scheduler", "print_lr": False, "epoch_level": False},
            {"_target_": "LrScheduleHandler", "lr_scheduler": "@ssl#transformer_lr_scheduler", "print_lr": False, "epoch_level": False},
            *_monitoring(None),
        ],
        **_ssl_common_handlers(
            "pretraining_checkpoint.pt",
            {
                "cnn": "@ssl#cnn",
                "transformer": "@ssl#transformer",
                "predictors": "@ssl#predictors",
                "optimizer": "@ssl#optimizer",
                "transformer_optimizer": "@ssl#transformer_optimizer",
                "lr_scheduler": "@ssl#lr_scheduler",
                "transformer_lr_scheduler": "@ssl#transformer_lr_scheduler",
            },
        ),
        "trainer": {
            "_target_": "$@s4mi_monai.engines.CASSTrainer",
            "device": "@torch_device",
            "max_epochs": "@ssl#epochs",
            "train_data_loader": "@ssl#dataloader",
            "network": "@ssl#cnn",
            "optimizer": "@ssl#optimizer",
            "transformer": "@ssl#transformer",
            "transformer_optimizer": "@ssl#transformer_optimizer",
            "predictors": "@ssl#predictors",
            "loss_function": "$@s4mi_monai.bundle.cass_loss_function(@stabiliser)",
            "views": "@ssl#views",
            "normalize": "@ssl#normalize",
            "amp": "@use_amp",
            "channels_last": "$@s4mi_monai.bundle.as_bool(@channels_last)",
            "compile": "$@s4mi_monai.bundle.as_bool(@compile)",
            "train_handlers": "@ssl#handlers",
        },
    }


def _pretraining_settings(spec: BundleSpec) -> dict[str, Any]:
    names = ["pretrain_epochs", "pretrain_max_iterations", "pretrain_batch_size", "pretrain_image_size", "pretrain_lr"]
    if spec.method == "dino":
        names += [
            "pretrain_optimizer",
            "crop_preset",
            "n_local_crops",
            "local_crop_size",
            "blur_sigma",
            "head_out_dim",
            "student_temp",
            "teacher_temp",
            "teacher_momentum",
        ]
    else:
        names += ["cnn_backbone", "transformer_backbone", "projection_dim", "stabiliser"]
    return {name: f"@{name}" for name in names}


def finetuning(spec: BundleSpec, scope: Scope = ROOT, branch: str | None = None) -> dict[str, Any]:
    """One supervised fine-tuning of a pretrained backbone (from ``pretrained_backbone``, not ImageNet); a CASS
    ``branch`` validates and tests on the root's shared loaders."""
    extra_settings: dict[str, Any] = {"pretraining": _pretraining_settings(spec)}
    if branch:
        extra_settings["branch"] = branch
    return {
        **parts.output_paths(scope),
        **supervised.model_objects(spec, scope, pretrained_weights=None),
        **supervised.training_objects(spec, scope, extra_settings, shared_evaluation_data=branch is not None),
    }


def finetune_section(spec: BundleSpec, branch: str) -> dict[str, Any]:
    """CASS: the fine-tuning of one network, in its own section and output folder ``<output_dir>/<branch>``."""
    return {
        "output_dir": f"$os.path.join(@output_dir, '{branch}')",
        "backbone": CASS_BRANCHES[branch],
        "pretrained_backbone": f"@pretrained_{branch}_backbone",
        **finetuning(spec, Scope(f"finetune_{branch}"), branch),
    }


def finetune_steps(scope: Scope = ROOT) -> list[str]:
    """Load the pretrained backbone, then the supervised steps: train, select on validation, report on test."""
    return [
        f"$@s4mi_monai.bundle.load_backbone({scope.ref('network')}, {scope.ref('pretrained_backbone')})",
        *supervised.training_steps(scope),
    ]


def _pretrain(backbones: str, skip_if_done: bool) -> str:
    """Pretrain, then write each ``(backbone, file)`` of ``backbones``; the ``run`` id skips a finished pretraining."""
    skip = ", skip_if_done=True" if skip_if_done else ""
    return f"$@s4mi_monai.bundle.pretrain(@ssl#trainer, @ssl#run_handlers, [{backbones}]{skip})"


def ssl_train_config(spec: BundleSpec) -> dict[str, Any]:
    """``train.json`` of a DINO or CASS bundle."""
    cass = spec.method == "cass"
    config: dict[str, Any] = {
        **parts.identity(spec, ["$import copy"]),
        # CASS fine-tunes two networks, each with its own backbone knob (cnn_backbone, transformer_backbone)
        **parts.run_knobs(spec, label_fraction=0.1, network={"pretrained_weights": None} if cass else None),
        **_pretraining_knobs(spec),
        **parts.data_and_device(),
        **supervised.transforms(spec),
        "ssl": _cass_section() if cass else _dino_section(),
    }
    if cass:
        config["validate"] = parts.evaluation_data(spec, "validation", "@validate")
        config["test"] = parts.evaluation_data(spec, "test", "@test")
        config.update({f"finetune_{branch}": finetune_section(spec, branch) for branch in CASS_BRANCHES})
        backbones = ", ".join(f"(@s4mi_monai.distributed.unwrap(@ssl#{branch}).backbone, @pretrained_{branch}_backbone)" for branch in CASS_BRANCHES)
        finetune = [
            *[step for branch in CASS_BRANCHES for step in finetune_steps(Scope(f"finetune_{branch}"))],
            f"$@s4mi_monai.bundle.publish_branch(@output_dir, @report_branch, {list(CASS_BRANCHES)})",
        ]
        finetune_trainers = [f"@finetune_{branch}#train#trainer" for branch in CASS_BRANCHES]
    else:
        config.update(finetuning(spec))
        backbones = "(@ssl#teacher.backbone, @pretrained_backbone)"
        finetune = finetune_steps()
        finetune_trainers = ["@train#trainer"]
    config["initialize"] = ["$monai.utils.set_determinism(seed=@seed)", "$@s4mi_monai.bundle.configure_logging()"]
    start_note = ["$@s4mi_monai.bundle.note_cass_start(@pretrained_weights, @on_constant_collapse)"] if cass else []
    config["pretrain"] = [*start_note, _pretrain(backbones, skip_if_done=False)]
    config["finetune"] = finetune
    config["run"] = [*start_note, _pretrain(backbones, skip_if_done=True), *finetune]
    config["training"] = "%run"
    config["benchmark"] = [
        "$@s4mi_monai.engines.benchmark(@ssl#trainer, 'pretrain', @benchmark_steps)",
        *[f"$@s4mi_monai.engines.benchmark({trainer}, 'finetune', @benchmark_steps)" for trainer in finetune_trainers],
    ]
    return config


LUCIDRAINS_PRESET = {
    "crop_preset": "lucidrains",
    "n_local_crops": 2,
    "global_crop_scale": [0.5, 1.0],
    "student_sees_globals": False,
    "student_temp": 0.9,
    "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.04,
    "head_hidden_dim": 256,
    "head_out_dim": 65536,
    "ssl#momentum_schedule": 0.9,
    "pretrain_lr": 3e-4,
    "pretrain_min_lr": 3e-4,
    "pretrain_warmup_epochs": 0,
    "pretrain_weight_decay": 0.0,
    "pretrain_weight_decay_end": 0.0,
    "clip_grad": 0.0,
    "freeze_last_layer": 0,
}
"""``configs/lucidrains.json``, laid over ``train.json``: the simplified DINO that the S4MI authors ran (methods.md 1.2.b):
student temperature 0.9, constant teacher temperature 0.04 and EMA 0.9, hidden width 256, two local crops at the global
size seen by the student only, constant Adam 3e-4 without weight decay, no clipping or last-layer freezing. Kept from
the official code: the weight-normalised last layer, per-image crop and colour draws (lucidrains draws once per batch)."""


SMALL_DATA_PRESET = {
    "pretrain_max_iterations": 3000,
    "pretrain_warmup_epochs": "$max(1, @ssl#epochs // 10)",
    "teacher_momentum": 0.99,
    "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.04,
    "head_out_dim": 2048,
    "local_crop_size": "$-(-@pretrain_image_size * 3 // 7 // 16) * 16",
    "blur_sigma": "$[0.1 * @pretrain_image_size / 224, 2.0 * @pretrain_image_size / 224]",
    "pretrain_optimizer": "$'sgd' if @backbone.startswith('resnet') else 'adamw'",
    "pretrain_lr": "$(0.03 if @pretrain_optimizer == 'sgd' else 0.0005) * @pretrain_batch_size / 256",
    "pretrain_weight_decay": "$1e-4 if @pretrain_optimizer == 'sgd' else 0.04",
    "pretrain_weight_decay_end": "$1e-4 if @pretrain_optimizer == 'sgd' else 0.4",
    "global_crop_scale": "$[0.14, 1.0] if @pretrain_optimizer == 'sgd' else [0.4, 1.0]",
    "local_crop_scale": "$[0.05, 0.14] if @pretrain_optimizer == 'sgd' else [0.05, 0.4]",
}
"""``configs/small_data.json``, laid over ``train.json``: DINO sized for a few thousand images. Thousands of steps
(3,000) with warm-ups in proportion, instead of ImageNet's epochs; teacher momentum from 0.99 (the fix reported on
small datasets, dino issues #61/#246/#273) and a constant teacher temperature 0.04 (the official default); 2,048
prototypes instead of 65,536; local crops at least 3/7 of the global size (rounded up to a multiple of 16) and the blur
scaled to the resolution (the official sigma range is for 224 px); for ResNets the official SGD recipe (lr 0.03 x
batch/256, momentum 0.9, weight decay 1e-4, crop scales (0.14, 1) and (0.05, 0.14))."""


def ssl_evaluate_config(spec: BundleSpec) -> dict[str, Any]:
    """``evaluate.json``: the supervised evaluation; CASS scores ``model.pt`` or either network (``--branch cnn|transformer``)."""
    return supervised.evaluate_config(spec, branch_knob=spec.method == "cass")
