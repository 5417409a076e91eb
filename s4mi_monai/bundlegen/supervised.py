"""Configs of the supervised bundles (``supervised_cls``, ``supervised_seg``), and the supervised training that the
self-supervised bundles fine-tune with.

One supervised training is two groups of objects built for a :class:`~s4mi_monai.bundlegen.parts.Scope`:
:func:`model_objects` (network, loss, optimizer, schedule) and :func:`training_objects` (model selection, history,
the ``train`` / ``validate`` / ``test`` sections, settings). ``train.json`` puts both at the config root; CASS puts
one copy in each of its ``finetune_cnn`` and ``finetune_vit`` sections.
"""

from __future__ import annotations

from typing import Any

from s4mi_monai.bundlegen import parts
from s4mi_monai.bundlegen.parts import ROOT, Scope
from s4mi_monai.bundlegen.registry import BundleSpec


def model_objects(spec: BundleSpec, scope: Scope = ROOT, pretrained_weights: str | None = "@pretrained_weights") -> dict[str, Any]:
    """The network, its loss, optimizer and cosine schedule over every optimiser step."""
    ref = scope.ref
    return {
        **parts.network(spec, scope, pretrained_weights),
        "loss": parts.loss(spec, scope),
        "optimizer": {
            "_target_": "torch.optim.Adam",
            "params": f"${ref('network')}.parameters()",
            "lr": "@learning_rate",
            "weight_decay": "@weight_decay",
        },
        "iterations_per_epoch": f"$len({ref('train#dataloader')})",
        "epochs": f"$@s4mi_monai.bundle.epochs_for_iterations(@max_iterations, @max_epochs, {ref('iterations_per_epoch')})",
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "optimizer": ref("optimizer"),
            "T_max": f"${ref('epochs')} * {ref('iterations_per_epoch')}",
            "eta_min": 1e-6,
        },
    }


def training_objects(
    spec: BundleSpec, scope: Scope = ROOT, extra_settings: dict[str, Any] | None = None, shared_evaluation_data: bool = False
) -> dict[str, Any]:
    """Train on the labeled fraction, keep the best validation model, resume from checkpoints, report on test.

    ``shared_evaluation_data``: validate and test on the loaders of the root's ``validate`` and ``test`` sections
    (:func:`s4mi_monai.bundlegen.parts.evaluation_data`) instead of their own, as CASS's two fine-tunings do.
    """
    ref = scope.ref
    validation_data, test_data = ("@validate", "@test") if shared_evaluation_data else (None, None)
    return {
        "best_model": {"_target_": "$@s4mi_monai.handlers.BestModelSaver", "save_path": ref("model_path"), "network": ref("network")},
        "random_state": parts.random_state(ref("train#dataset")),
        "history": {
            "_target_": "$@s4mi_monai.handlers.EpochHistory",
            "output_dir": ref("output_dir"),
            "validator": ref("validate#evaluator"),
            "optimizer": ref("optimizer"),
            "best_saver": ref("best_model"),
        },
        "train": {
            "dataset": {
                "_target_": "CacheDataset",
                "data": parts.items(spec, "training", "@label_fraction"),
                "transform": "$monai.transforms.Compose(@preprocessing + @augmentation + @normalization)",
                "cache_rate": 1.0,
                "progress": False,
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": ref("train#dataset"),
                "batch_size": "@batch_size",
                "shuffle": True,
                "drop_last": f"$@s4mi_monai.bundle.drop_single_image_batch(len({ref('train#dataset')}), @batch_size)",
                "num_workers": "@num_workers",
            },
            "inferer": {"_target_": "SimpleInferer"},  # a required MONAI train property
            "handlers": [
                {"_target_": "LrScheduleHandler", "lr_scheduler": ref("lr_scheduler"), "print_lr": False, "epoch_level": False},
                {"_target_": "ValidationHandler", "validator": ref("validate#evaluator"), "interval": "@val_interval", "epoch_level": True},
                *parts.logging_handlers(
                    f"$os.path.join({ref('output_dir')}, 'runs')", "train_loss", "$monai.handlers.from_engine(['loss'], first=True)"
                ),
            ],
            "run_handlers": parts.run_handlers(ref("history"), ref("checkpoint_path"), ref("resume_objects")),
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "@torch_device",
                "max_epochs": ref("epochs"),
                "train_data_loader": ref("train#dataloader"),
                "network": ref("network"),
                "optimizer": ref("optimizer"),
                "loss_function": ref("loss"),
                "inferer": ref("train#inferer"),
                "amp": "@use_amp",
                "train_handlers": ref("train#handlers"),
            },
        },
        "resume_objects": {
            "trainer": ref("train#trainer"),
            "network": ref("network"),
            "optimizer": ref("optimizer"),
            "lr_scheduler": ref("lr_scheduler"),
            "best_model": ref("best_model"),
            "history": ref("history"),
            "random_state": ref("random_state"),
        },
        "validate": parts.evaluation_section(
            spec, "validation", ref("validate"), ref("network"), [ref("best_model")], data=validation_data
        ),
        "test": parts.evaluation_section(spec, "test", ref("test"), ref("network"), [], data=test_data),
        "settings": {**parts.settings(spec, scope), **(extra_settings or {})},
        "model_info": parts.model_info(spec, scope),
    }


def training_steps(scope: Scope = ROOT) -> list[str]:
    """Write the model info, train (resuming if a checkpoint exists), then score the selected model on test."""
    ref = scope.ref
    return [
        f"$@s4mi_monai.bundle.write_model_info({ref('output_dir')}, {ref('model_info')})",
        f"$[handler.attach({ref('train#trainer')}) for handler in {ref('train#run_handlers')}]",
        f"${ref('train#trainer')}.run()",
        f"$@s4mi_monai.bundle.report_test_metrics({ref('test#evaluator')}, {ref('network')}, {ref('model_path')}, "
        f"{ref('metrics_path')}, {ref('settings')}, {ref('best_model')})",
    ]


def transforms(spec: BundleSpec) -> dict[str, Any]:
    """Preprocessing (cached), augmentation and normalisation of the labeled images; postprocessing and the metric."""
    return {
        "preprocessing": parts.preprocessing(spec, with_label=True),
        "augmentation": parts.augmentation(with_mask=spec.task == "segmentation"),
        "normalization": parts.normalization(),
        **parts.evaluation_definitions(spec),
    }


def initialize(spec: BundleSpec) -> list[str]:
    """Seed everything, show the epoch lines, and check the network size before any data is read."""
    steps = ["$monai.utils.set_determinism(seed=@seed)", "$@s4mi_monai.bundle.configure_logging()"]
    if spec.task == "segmentation":
        steps.append("$@s4mi_monai.networks.check_segmentation_architecture(@architecture, @image_size)")
    return steps


def train_config(spec: BundleSpec) -> dict[str, Any]:
    """``train.json``: train on the labeled fraction, select on validation, report on test."""
    return {
        **parts.identity(spec),
        **parts.run_knobs(spec),
        **parts.data_and_device(),
        **parts.output_paths(),
        **model_objects(spec),
        **transforms(spec),
        **training_objects(spec),
        "initialize": initialize(spec),
        "run": training_steps(),
        "training": "%run",
    }


def evaluate_config(spec: BundleSpec, branch_knob: bool = False) -> dict[str, Any]:
    """``evaluate.json``: score the trained model on the test split with the shared evaluator.

    The network knobs are read from the ``model_info.json`` that training wrote beside the model (their training
    defaults before any training). ``branch_knob``: ``--branch`` picks one network of a two-network bundle.
    """
    knobs = parts.run_knobs(spec)
    network_knob_names = parts.NETWORK_KNOBS[spec.task]
    defaults = {knob: knobs[knob] for knob in network_knob_names}
    config: dict[str, Any] = {
        **parts.identity(spec),
        **{key: f"$@model_info['{key}']" if key in network_knob_names else value for key, value in knobs.items()},
        **parts.data_and_device(),
        **parts.output_paths(),
        "model_info": parts.read_model_info(defaults),
        **parts.network(spec),
        "preprocessing": parts.preprocessing(spec, with_label=True),
        "normalization": parts.normalization(),
        **parts.evaluation_definitions(spec),
    }
    if branch_knob:
        config["model_path"] = "$os.path.join(@output_dir, *([@branch] if @branch else []), 'model.pt')"
        config["metrics_path"] = "$os.path.join(os.path.dirname(@model_path), 'metrics.json')"
    if spec.task == "classification":
        config["saliency_images"] = 0  # > 0: gradient saliency panels of that many test images
    if branch_knob:
        config["branch"] = None
    config["test"] = parts.evaluation_section(spec, "test", "@test", "@network", [])
    config["settings"] = {**parts.settings(spec), **dict.fromkeys(parts.TRAINING_RUN_SETTINGS)}
    config["initialize"] = initialize(spec)
    config["run"] = ["$@s4mi_monai.bundle.report_test_metrics(@test#evaluator, @network, @model_path, @metrics_path, @settings)"]
    if spec.task == "classification":
        config["run"].append(
            "$@s4mi_monai.visualize.write_item_saliency(@network, @s4mi_monai.bundle.classification_items(@data, 'test', None), "
            "monai.transforms.Compose(@preprocessing + @normalization), @classes, @multi_label, "
            "os.path.join(os.path.dirname(@metrics_path), 'saliency'), @saliency_images)"
        )
    config["evaluating"] = "%run"
    return config


def inference_head(spec: BundleSpec, network_defaults: dict[str, Any]) -> dict[str, Any]:
    """Inference's inputs, outputs, device and the trained model's info (``network_defaults`` before any training)."""
    profile = spec.profile
    defaults = {
        "classes": parts.demo_classes(profile),
        "multi_label": profile.multi_label,
        "image_size": 64,
        "red_normalization": profile.red_normalization,
        **network_defaults,
    }
    return {
        "input_dir": None,
        "dataset_dir": "@input_dir",
        "output_dir": "$os.path.join(@bundle_root, 'predictions')",
        "model_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "torch_device": "$torch.device(@device)",
        "model_info": parts.read_model_info(defaults),
        "classes": "$@model_info['classes']",
        "multi_label": "$@model_info['multi_label']",
        "image_size": "$@model_info['image_size']",
        "red_normalization": "$@model_info['red_normalization']",
    }


def inference_data(spec: BundleSpec) -> dict[str, Any]:
    """Every readable image of ``--input_dir``, prepared as at training time."""
    return {
        "preprocessing": {
            "_target_": "Compose",
            "transforms": parts.loading(spec, with_label=False)
            + [inference_resize(spec), dict(parts.SCALE_TO_UNIT)]
            + parts.normalization(),
        },
        "dataset": {"_target_": "Dataset", "data": "$@s4mi_monai.bundle.image_files(@input_dir)", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0},
    }


def inference_resize(spec: BundleSpec) -> dict[str, Any]:
    """Whole images are resized like training; slides are rescaled like the tiles, then windowed."""
    if spec.task == "classification" or spec.profile.slide_scale is None:
        return {"_target_": "Resized", "keys": "image", "spatial_size": ["@image_size", "@image_size"], "mode": "area"}
    scale = f"$@image_size / 224 * {spec.profile.slide_scale:.6f}"
    return {"_target_": "Zoomd", "keys": "image", "zoom": scale, "mode": "area", "keep_size": False}


def inference_output(spec: BundleSpec) -> dict[str, Any]:
    """The inferer, the postprocessing and the writer: probabilities to a CSV, or masks and overlays per image."""
    if spec.task == "classification":
        return {
            "inferer": {"_target_": "SimpleInferer"},
            "postprocessing": {
                "_target_": "Compose",
                "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": "$not @multi_label", "sigmoid": "@multi_label"}],
            },
            "writers": [
                {
                    "_target_": "$@s4mi_monai.handlers.ProbabilityCSVWriter",
                    "output_path": "$os.path.join(@output_dir, 'predictions.csv')",
                    "class_names": "@classes",
                    "multi_label": "@multi_label",
                }
            ],
        }
    return {
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": ["@image_size", "@image_size"],
            "sw_batch_size": 4,
            "overlap": 0.25,
            "mode": "gaussian",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "$@s4mi_monai.transforms.SaveMaskAndOverlayd", "keys": "pred", "output_dir": "@output_dir"},
                *MASK_FOR_CLIENTS,
            ],
        },
        "writers": [],
    }


MASK_FOR_CLIENTS = [
    {"_target_": "SqueezeDimd", "keys": "pred", "dim": 0},
    {"_target_": "CastToTyped", "keys": "pred", "dtype": "$torch.uint8"},
]
"""After our writer: the mask as a 2-D uint8 image at the input's size, what MONAI Label's writer saves as PNG or NIfTI."""

INFERENCE_RUN = ["$@evaluator.run()", "$@s4mi_monai.bundle.finish_inference(@dataset#data, @output_dir)"]
"""Predict every readable image, then report what was left out (exit status 1 when an image could not be read)."""

INFERENCE_EVALUATOR = {
    "_target_": "SupervisedEvaluator",
    "device": "@torch_device",
    "val_data_loader": "@dataloader",
    "network": "@network",
    "inferer": "@inferer",
    "postprocessing": "@postprocessing",
    "val_handlers": "@handlers",
}


def inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``inference.json``: predict on a folder of new images (MONAI Label reads this file)."""
    demo_network = (
        {"backbone": "resnet18"}
        if spec.task == "classification"
        else {"architecture": "resnet_unet", "encoder": "resnet34", "transformer_embed_dim": 24}
    )
    output = inference_output(spec)
    return {
        **parts.identity(spec),
        **inference_head(spec, demo_network),
        "pretrained_weights": None,
        **{knob: f"$@model_info['{knob}']" for knob in parts.NETWORK_KNOBS[spec.task]},
        **parts.network(spec),
        **inference_data(spec),
        "inferer": output["inferer"],
        "postprocessing": output["postprocessing"],
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "@model_path", "load_dict": {"model": "@network"}, "map_location": "@torch_device"},
            *output["writers"],
        ],
        "evaluator": dict(INFERENCE_EVALUATOR),
        "initialize": ["$@s4mi_monai.bundle.configure_logging()", "$@s4mi_monai.bundle.require_model(@model_path)"],
        "run": INFERENCE_RUN,
        "inferring": "%run",
        **parts.slide_run(spec),
    }
