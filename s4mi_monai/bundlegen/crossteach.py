"""Configs of the semi-supervised segmentation bundles: cross teaching between a CNN U-Net and a Swin-UNet.

``train.json`` keeps the shape of the supervised segmentation config (:func:`s4mi_monai.bundlegen.supervised.train_config`)
with two networks, two optimizers and one :class:`s4mi_monai.engines.CrossTeachingTrainer` fed by a two-stream
sampler; validation and test sections exist once per network (``validate`` and ``test`` for the CNN, as MONAI's
workflow properties expect; ``validate_transformer`` and ``test_transformer``).
Each network's selected weights, info and test metrics go to ``<output_dir>/<branch>/``; the reported branch
(``--report_branch``, default the CNN) is copied to ``<output_dir>/model.pt``, and ``metrics.json`` holds both.
Run ids: ``training`` (= ``run``) and ``benchmark``.
"""

from __future__ import annotations

from typing import Any

from s4mi_monai.bundlegen import parts, supervised
from s4mi_monai.bundlegen.registry import BundleSpec

BRANCHES = ("cnn", "transformer")
NETWORK_OF_BRANCH = {"cnn": "@network", "transformer": "@transformer_network"}
"""The two networks trained together, and the config ids of their networks."""
DEMO_NETWORKS = {"branch": "cnn", "transformer": "swin_unet", "transformer_embed_dim": 24}
"""The networks that evaluation and inference rebuild when training wrote no ``model_info.json``."""

SSL4MIS_PRESET = {
    "learning_rate": 0.01,
    "weight_decay": 0.0001,
    "optimizer": {
        "_target_": "torch.optim.SGD",
        "params": "$@network.parameters()",
        "lr": "@learning_rate",
        "momentum": 0.9,
        "weight_decay": "@weight_decay",
    },
    "transformer_optimizer": {
        "_target_": "torch.optim.SGD",
        "params": "$@transformer_network.parameters()",
        "lr": "@learning_rate",
        "momentum": 0.9,
        "weight_decay": "@weight_decay",
    },
    "lr_schedule": "$@s4mi_monai.optim.poly_schedule(@learning_rate, @epochs, @iterations_per_epoch, 0.9)",
}
"""``configs/ssl4mis.json``, laid over ``train.json``: the SSL4MIS recipe (SGD, momentum 0.9, weight decay 1e-4,
lr 0.01 with poly decay ``(1 − t/N)^0.9``) instead of the paper's Adam 3.6e-4 with cosine decay."""


def _knobs(spec: BundleSpec) -> dict[str, Any]:
    """The shared run knobs without the supervised network's (cross teaching has its own two), then its own."""
    return {
        **parts.run_knobs(spec, label_fraction=0.5, max_epochs="$10 if @demo else 50", network={}),
        "labeled_batch_size": "$4 if @demo else 8",
        "unlabeled_batch_size": "$4 if @demo else 8",
        "transformer": "swin_unet",
        "transformer_embed_dim": "$24 if @demo else 96",
        "pretrained_transformer_weights": None,
        "min_learning_rate": 1e-6,
        "consistency": 0.1,
        "consistency_ramp": 0.4,
        "report_branch": "cnn",
        "channels_last": "$@torch_device.type == 'cuda'",
        "compile": False,
        "benchmark_steps": 20,
    }


def _output_paths() -> dict[str, Any]:
    """The reported model and the resume checkpoint at the top, each network's outputs in its own folder."""
    return {
        "model_path": "$os.path.join(@output_dir, 'model.pt')",
        "checkpoint_path": "$os.path.join(@output_dir, 'checkpoint.pt')",
        **{f"{branch}_dir": f"$os.path.join(@output_dir, '{branch}')" for branch in BRANCHES},
    }


def networks() -> dict[str, Any]:
    """The CNN (``network``) and the transformer (``transformer_network``), shared by train, evaluate and inference."""
    return {
        "network_def": {"_target_": "$@s4mi_monai.networks.SSL4MISUNet", "in_channels": 3, "out_channels": 2},
        "network": "$@s4mi_monai.bundle.to_device(@network_def, @torch_device, @channels_last)",
        "transformer_def": {
            "_target_": "$@s4mi_monai.networks.build_segmentation_transformer",
            "name": "@transformer",
            "in_channels": 3,
            "out_channels": 2,
            "embed_dim": "@transformer_embed_dim",
            "pretrained_weights": "@pretrained_transformer_weights",
        },
        "transformer_network": "$@transformer_def.to(@torch_device)",
    }


def _section(split: str, branch: str) -> str:
    """Config id of a network's evaluation: the CNN's is ``validate``/``test`` (MONAI's workflow properties), the other's suffixed."""
    section = "validate" if split == "validation" else "test"
    return section if branch == "cnn" else f"{section}_{branch}"


def _evaluation(spec: BundleSpec, split: str, branch: str, handlers: list[Any]) -> dict[str, Any]:
    """One network's validation or test section: the shared evaluator on that network (the transformer's on the CNN
    section's loader)."""
    data = None if branch == "cnn" else f"@{_section(split, 'cnn')}"
    return parts.evaluation_section(spec, split, f"@{_section(split, branch)}", NETWORK_OF_BRANCH[branch], handlers, data=data)


def _initialize() -> list[str]:
    """Seed everything, show the epoch lines, and check the transformer's input size before any data is read."""
    return [
        "$monai.utils.set_determinism(seed=@seed)",
        "$@s4mi_monai.bundle.configure_logging()",
        "$@s4mi_monai.networks.check_transformer_image_size(@image_size, @transformer)",
    ]


def _model_info(branch: str) -> dict[str, Any]:
    """What inference needs to rebuild either network (written beside each network's weights)."""
    return {
        "task": "segmentation",
        "classes": "@classes",
        "multi_label": "@multi_label",
        "image_size": "@image_size",
        "red_normalization": "$@s4mi_monai.bundle.as_bool(@red_normalization)",
        "branch": branch,
        "transformer": "@transformer",
        "transformer_embed_dim": "@transformer_embed_dim",
    }


def _settings() -> dict[str, Any]:
    names = [
        "label_fraction",
        "selection_metric",
        "seed",
        "max_epochs",
        "max_iterations",
        "epochs",
        "iterations_per_epoch",
        "image_size",
        "labeled_batch_size",
        "unlabeled_batch_size",
        "learning_rate",
        "weight_decay",
        "consistency",
        "consistency_ramp",
        "transformer",
        "transformer_embed_dim",
        "pretrained_transformer_weights",
        "report_branch",
    ]
    return {
        "bundle": "@bundle_name",
        "datalist": "$@data['datalist_path']",
        **{name: f"@{name}" for name in names},
        "total_steps": "$@epochs * @iterations_per_epoch",
        "n_labeled_training_items": "$len(@train#labeled_dataset)",
        "n_unlabeled_training_items": "$len(@train#unlabeled_dataset)",
        "optimizer": "$type(@optimizer).__name__",
        "red_normalization": "$@s4mi_monai.bundle.as_bool(@red_normalization)",
        "device": "$str(@torch_device)",
        "amp": "@use_amp",
    }


def crossteach_train_config(spec: BundleSpec) -> dict[str, Any]:
    """``train.json`` of a cross-teaching bundle."""
    iterations = "@iterations_per_epoch"

    def optimizer(network: str) -> dict[str, Any]:
        return {
            "_target_": "torch.optim.Adam",
            "params": f"$@{network}.parameters()",
            "lr": "@learning_rate",
            "weight_decay": "@weight_decay",
        }

    def best(branch: str) -> dict[str, Any]:
        return {
            "_target_": "$@s4mi_monai.handlers.BestModelSaver",
            "save_path": f"$os.path.join(@{branch}_dir, 'model.pt')",
            "network": NETWORK_OF_BRANCH[branch],
        }

    config: dict[str, Any] = {
        **parts.identity(spec),
        **_knobs(spec),
        **parts.data_and_device(),
        **_output_paths(),
        **networks(),
        "loss": {"_target_": "$@s4mi_monai.losses.CrossTeachingLoss"},
        "optimizer": optimizer("network"),
        "transformer_optimizer": optimizer("transformer_network"),
        "iterations_per_epoch": "$len(@train#dataloader)",  # the two-stream sampler's epoch: ceil(n_labeled / labeled batch)
        "epochs": f"$@s4mi_monai.bundle.epochs_for_iterations(@max_iterations, @max_epochs, {iterations})",
        "lr_schedule": f"$@s4mi_monai.optim.cosine_schedule(@learning_rate, @min_learning_rate, @epochs, {iterations})",
        "consistency_schedule": f"$@s4mi_monai.optim.sigmoid_rampup_schedule(@consistency, @consistency_ramp, @epochs, {iterations})",
        "preprocessing": parts.preprocessing(spec, with_label=True),
        "unlabeled_preprocessing": parts.preprocessing(spec, with_label=False),
        "augmentation": parts.augmentation(with_mask=True),
        "unlabeled_augmentation": parts.augmentation(with_mask=False),
        "normalization": parts.normalization(),
        **parts.evaluation_definitions(spec),
        "best_cnn": best("cnn"),
        "best_transformer": best("transformer"),
        "random_state": parts.random_state("@train#dataset"),
        "history": {
            "_target_": "$@s4mi_monai.handlers.EpochHistory",
            "output_dir": "@output_dir",
            "validator": {"cnn": "@validate#evaluator", "transformer": "@validate_transformer#evaluator"},
            "optimizer": "@optimizer",
            "best_saver": "@best_cnn",
        },
        "train": {
            "labeled_dataset": {
                "_target_": "CacheDataset",
                "data": "$@s4mi_monai.bundle.segmentation_items(@data, 'training', @label_fraction)",
                "transform": "$monai.transforms.Compose(@preprocessing + @augmentation + @normalization)",
                "cache_rate": 1.0,
                "progress": False,
            },
            "unlabeled_dataset": {
                "_target_": "CacheDataset",
                "data": "$@s4mi_monai.bundle.unlabeled_items(@data, 'training', @label_fraction)",
                "transform": "$monai.transforms.Compose(@unlabeled_preprocessing + @unlabeled_augmentation + @normalization)",
                "cache_rate": 1.0,
                "progress": False,
            },
            "dataset": {"_target_": "torch.utils.data.ConcatDataset", "datasets": ["@train#labeled_dataset", "@train#unlabeled_dataset"]},
            "sampler": {
                "_target_": "$@s4mi_monai.data.TwoStreamBatchSampler",
                "n_labeled": "$len(@train#labeled_dataset)",
                "n_unlabeled": "$len(@train#unlabeled_dataset)",
                "labeled_batch_size": "@labeled_batch_size",
                "unlabeled_batch_size": "@unlabeled_batch_size",
                "seed": "@seed",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@train#dataset",
                "batch_sampler": "@train#sampler",
                "collate_fn": "$@s4mi_monai.data.two_stream_collate",
                "num_workers": "@num_workers",
                "pin_memory": "$@torch_device.type == 'cuda'",
            },
            "inferer": {"_target_": "SimpleInferer"},  # a required MONAI train property
            "handlers": [
                {"_target_": "$@s4mi_monai.handlers.ScheduleHandler", "values": "@lr_schedule", "optimizer": "@optimizer", "param_key": "lr"},
                {
                    "_target_": "$@s4mi_monai.handlers.ScheduleHandler",
                    "values": "@lr_schedule",
                    "optimizer": "@transformer_optimizer",
                    "param_key": "lr",
                },
                {"_target_": "$@s4mi_monai.handlers.ScheduleHandler", "values": "@consistency_schedule", "attribute": "consistency_weight"},
                # the CNN's validation last: MONAI's workflow check reads the last ValidationHandler
                {
                    "_target_": "ValidationHandler",
                    "validator": "@validate_transformer#evaluator",
                    "interval": "@val_interval",
                    "epoch_level": True,
                },
                {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "interval": "@val_interval", "epoch_level": True},
                *parts.logging_handlers("$os.path.join(@output_dir, 'runs')", "train_loss", "$lambda output: output['loss']"),
            ],
            "run_handlers": parts.run_handlers("@history", "@checkpoint_path", "@resume_objects"),
            "trainer": {
                "_target_": "$@s4mi_monai.engines.CrossTeachingTrainer",
                "device": "@torch_device",
                "max_epochs": "@epochs",
                "train_data_loader": "@train#dataloader",
                "network": "@network",
                "optimizer": "@optimizer",
                "transformer": "@transformer_network",
                "transformer_optimizer": "@transformer_optimizer",
                "loss_function": "@loss",
                "consistency_weight": "@consistency",
                "amp": "@use_amp",
                "channels_last": "$@s4mi_monai.bundle.as_bool(@channels_last)",
                "compile": "$@s4mi_monai.bundle.as_bool(@compile)",
                "train_handlers": "@train#handlers",
            },
        },
        "resume_objects": {
            "trainer": "@train#trainer",
            "network": "@network",
            "transformer_network": "@transformer_network",
            "optimizer": "@optimizer",
            "transformer_optimizer": "@transformer_optimizer",
            "best_cnn": "@best_cnn",
            "best_transformer": "@best_transformer",
            "history": "@history",
            "random_state": "@random_state",
        },
        "validate": _evaluation(spec, "validation", "cnn", ["@best_cnn"]),
        "validate_transformer": _evaluation(spec, "validation", "transformer", ["@best_transformer"]),
        "test": _evaluation(spec, "test", "cnn", []),
        "test_transformer": _evaluation(spec, "test", "transformer", []),
        "settings": _settings(),
        **{f"model_info_{branch}": _model_info(branch) for branch in BRANCHES},
        "initialize": _initialize(),
    }
    report = []
    for branch in BRANCHES:
        network = NETWORK_OF_BRANCH[branch]
        report.append(
            f"$@s4mi_monai.bundle.report_test_metrics(@{_section('test', branch)}#evaluator, {network}, os.path.join(@{branch}_dir, 'model.pt'), "
            f"os.path.join(@{branch}_dir, 'metrics.json'), dict(@settings, branch='{branch}'), @best_{branch})"
        )
    config["run"] = [
        *[f"$@s4mi_monai.bundle.write_model_info(@{branch}_dir, @model_info_{branch})" for branch in BRANCHES],
        "$[handler.attach(@train#trainer) for handler in @train#run_handlers]",
        "$@train#trainer.run()",
        *report,
        f"$@s4mi_monai.bundle.publish_branch(@output_dir, @report_branch, {list(BRANCHES)})",
    ]
    config["training"] = "%run"
    config["benchmark"] = ["$@s4mi_monai.engines.benchmark(@train#trainer, 'cross_teaching', @benchmark_steps)"]
    return config


def crossteach_evaluate_config(spec: BundleSpec) -> dict[str, Any]:
    """``evaluate.json``: score the reported network (``model.pt``) or either one (``--branch cnn|transformer``) on test."""
    knobs = _knobs(spec)
    knobs.update({"transformer": "$@model_info['transformer']", "transformer_embed_dim": "$@model_info['transformer_embed_dim']"})
    return {
        **parts.identity(spec),
        **knobs,
        **parts.data_and_device(),
        "branch": None,
        "model_path": "$os.path.join(@output_dir, *([@branch] if @branch else []), 'model.pt')",
        "metrics_path": "$os.path.join(os.path.dirname(@model_path), 'metrics.json')",
        "model_info": parts.read_model_info(DEMO_NETWORKS),
        "predict_with": "$@branch or @model_info['branch']",
        **networks(),
        "predictor": "$@s4mi_monai.networks.select_prediction_network(@predict_with, @network, @transformer_network)",
        "preprocessing": parts.preprocessing(spec, with_label=True),
        "normalization": parts.normalization(),
        **parts.evaluation_definitions(spec),
        "test": parts.evaluation_section(spec, "test", "@test", "@predictor", []),
        "settings": {"bundle": "@bundle_name", "datalist": "$@data['datalist_path']", "branch": "@predict_with", "seed": "@seed"},
        "initialize": _initialize(),
        "run": ["$@s4mi_monai.bundle.report_test_metrics(@test#evaluator, @predictor, @model_path, @metrics_path, @settings)"],
        "evaluating": "%run",
    }


def crossteach_inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``inference.json``: the reported network by default; ``--predict_with cnn|transformer|mean`` (mean of both softmaxes)."""
    output = supervised.inference_output(spec)
    trained = networks()
    return {
        **parts.identity(spec),
        **supervised.inference_head(spec, DEMO_NETWORKS),
        "predict_with": "$@model_info['branch']",
        "transformer": "$@model_info['transformer']",
        "transformer_embed_dim": "$@model_info['transformer_embed_dim']",
        "pretrained_transformer_weights": None,
        "channels_last": False,
        "cnn": trained["network_def"],
        "transformer_network": trained["transformer_def"],
        "network_def": "$@s4mi_monai.networks.select_prediction_network(@predict_with, @cnn, @transformer_network)",
        "network": "$@network_def.to(@torch_device)",
        **supervised.inference_data(spec),
        "inferer": output["inferer"],
        "postprocessing": output["postprocessing"],
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "_disabled_": f"$@predict_with == '{other}'",
                "load_path": f"$@s4mi_monai.bundle.branch_model_path(@model_path, '{branch}')",
                "load_dict": {"model": f"@{name}"},
                "map_location": "@torch_device",
            }
            for branch, other, name in (("cnn", "transformer", "cnn"), ("transformer", "cnn", "transformer_network"))
        ]
        + output["writers"],
        "evaluator": dict(supervised.INFERENCE_EVALUATOR),
        "initialize": [
            "$@s4mi_monai.bundle.configure_logging()",
            *[
                f"$@s4mi_monai.bundle.require_model(@s4mi_monai.bundle.branch_model_path(@model_path, '{branch}')) "
                f"if @predict_with in ('{branch}', 'mean') else None"
                for branch in BRANCHES
            ],
        ],
        "run": supervised.INFERENCE_RUN,
        "inferring": "%run",
        **parts.slide_run(spec),
    }
