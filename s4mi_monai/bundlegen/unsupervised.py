"""Configs of the unsupervised segmentation bundles: PiCIE (Cho et al., CVPR 2021), no masks in training.

``train.json`` holds a ``picie`` section (the network, its two views, the clustering handler and the trainer),
the label-free evaluation at the root (``validate``: the clustering split, whose images, never its masks, give
the final centroids; ``test``: the shared segmentation evaluator on the matched masks), and a ``supervised``
section: the supervised U-Net of :mod:`s4mi_monai.bundlegen.supervised`, its encoder started from PiCIE's.
Run ids: ``training`` (= ``run``: PiCIE, then final clustering, matching and the test report), ``pretrain``
(PiCIE only: writes the encoder for fine-tuning), ``finetune`` (the U-Net at ``--label_fraction`` from
``--pretrained_backbone``) and ``benchmark``.
"""

from __future__ import annotations

from typing import Any

from s4mi_monai.bundlegen import parts, supervised
from s4mi_monai.bundlegen.parts import Scope
from s4mi_monai.bundlegen.registry import BundleSpec

FINETUNE = Scope("supervised")
"""Where the fine-tuning U-Net's objects live (the run id ``finetune`` runs them)."""


def _knobs(spec: BundleSpec) -> dict[str, Any]:
    """The run knobs (the fine-tuning U-Net's network knobs included), then PiCIE's: the S4MI fork's recipe."""
    return {
        **parts.run_knobs(spec, label_fraction=0.1),
        "pretrain_epochs": "$3 if @demo else 50",
        "pretrain_batch_size": "$8 if @demo else 64",
        "pretrain_lr": 1e-4,
        "pretrain_lr_step": 5,
        "pretrain_lr_gamma": 0.502,
        "n_clusters": 2,
        "cluster_weighting": "frequency",
        "cluster_matching": "hungarian",
        "kmeans_init_batches": "$2 if @demo else 20",
        "kmeans_iterations": 20,
        "min_scale": 0.5,
        "grayscale_input": False,
        "pretrained_backbone": "$os.path.join(@output_dir, 'pretrained_backbone.pt')",
        "picie_network_path": "$os.path.join(@output_dir, 'picie_network.pt')",
        "channels_last": "$@torch_device.type == 'cuda'",
        "benchmark_steps": 20,
    }


def _picie_section() -> dict[str, Any]:
    """Every training image (labeled or not; never a mask) at the training size, as uint8; the network and trainer."""
    return {
        "preprocessing": parts.uint8_images("@image_size"),
        "dataset": {
            "_target_": "CacheDataset",
            "data": "$@s4mi_monai.bundle.indexed(@s4mi_monai.bundle.unlabeled_items(@data, 'training'))",
            "transform": "$monai.transforms.Compose(@picie#preprocessing)",
            "cache_rate": 1.0,
            "progress": False,
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@picie#dataset",
            "batch_size": "$min(@pretrain_batch_size, len(@picie#dataset))",
            "shuffle": True,
            "drop_last": "$@s4mi_monai.bundle.drop_single_image_batch(len(@picie#dataset), @picie#dataloader#batch_size)",
            "num_workers": "@num_workers",
            "pin_memory": "$@torch_device.type == 'cuda'",
        },
        "network_def": {"_target_": "$@s4mi_monai.networks.PiCIENet", "encoder": "@encoder", "pretrained_weights": "@pretrained_weights"},
        "network": "$@s4mi_monai.bundle.to_device(@picie#network_def, @torch_device, @channels_last)",
        "views": {
            "_target_": "$@s4mi_monai.transforms.PiCIEViews",
            "min_scale": "@min_scale",
            "grayscale_input": "$@s4mi_monai.bundle.as_bool(@grayscale_input)",
            "seed": "@seed",
        },
        "loss": {"_target_": "$@s4mi_monai.losses.PiCIELoss", "weighting": "@cluster_weighting"},
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@picie#network.parameters()", "lr": "@pretrain_lr"},
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.StepLR",
            "optimizer": "@picie#optimizer",
            "step_size": "@pretrain_lr_step",
            "gamma": "@pretrain_lr_gamma",
        },
        "clustering": {
            "_target_": "$@s4mi_monai.handlers.PiCIEClustering",
            "n_clusters": "@n_clusters",
            "init_batches": "@kmeans_init_batches",
            "n_iter": "@kmeans_iterations",
            "seed": "@seed",
        },
        "handlers": [
            "@picie#clustering",
            {"_target_": "LrScheduleHandler", "lr_scheduler": "@picie#lr_scheduler", "print_lr": False, "epoch_level": True},
            *parts.logging_handlers("$os.path.join(@output_dir, 'pretraining', 'runs')", "picie_loss", "$lambda output: output['loss']"),
        ],
        "history": {
            "_target_": "$@s4mi_monai.handlers.EpochHistory",
            "output_dir": "$os.path.join(@output_dir, 'pretraining')",
            "optimizer": "@picie#optimizer",
        },
        "random_state": parts.random_state("@picie#dataset"),
        "checkpoint_path": "$os.path.join(@output_dir, 'pretraining_checkpoint.pt')",
        "run_handlers": parts.run_handlers("@picie#history", "@picie#checkpoint_path", "@picie#resume_objects"),
        "resume_objects": {
            "network": "@picie#network",
            "optimizer": "@picie#optimizer",
            "lr_scheduler": "@picie#lr_scheduler",
            "trainer": "@picie#trainer",
            "history": "@picie#history",
            "random_state": "@picie#random_state",
        },
        "trainer": {
            "_target_": "$@s4mi_monai.engines.PiCIETrainer",
            "device": "@torch_device",
            "max_epochs": "@pretrain_epochs",
            "train_data_loader": "@picie#dataloader",
            "network": "@picie#network",
            "optimizer": "@picie#optimizer",
            "loss_function": "@picie#loss",
            "views": "@picie#views",
            "amp": "@use_amp",
            "channels_last": "$@s4mi_monai.bundle.as_bool(@channels_last)",
            "train_handlers": "@picie#handlers",
        },
    }


def segmenter(output: str = "classes") -> dict[str, Any]:
    """The trained PiCIE network with its centroids and matching (buffers of the model) as a segmentation network."""
    return {
        "_target_": "$@s4mi_monai.networks.PiCIESegmenter",
        "network": {"_target_": "$@s4mi_monai.networks.PiCIENet", "encoder": "@encoder"},
        "n_clusters": "@n_clusters",
        "output": output,
        "grayscale_input": "$@s4mi_monai.bundle.as_bool(@grayscale_input)",
    }


def _evaluation(spec: BundleSpec) -> dict[str, Any]:
    """The clustering split (validation images; its masks are not read) and the test report on [0, 1] images (PiCIE
    trains without ImageNet normalisation, as S4MI)."""
    unnormalized = "$monai.transforms.Compose(@preprocessing)"
    return {
        "segmenter_def": {**segmenter(), "network": "$@s4mi_monai.distributed.unwrap(@picie#network)"},
        "segmenter": "$@segmenter_def.to(@torch_device)",
        "model_path": "$os.path.join(@output_dir, 'model.pt')",
        "metrics_path": "$os.path.join(@output_dir, 'metrics.json')",
        "validate": parts.evaluation_data(spec, "validation", "@validate", transform=unnormalized),
        "test": {
            **parts.evaluation_data(spec, "test", "@test", transform=unnormalized),
            "postprocessing": "@postprocessing",
            "key_metric": {"test_metric": "%metric"},
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@torch_device",
                "val_data_loader": "@test#dataloader",
                "network": "@segmenter",
                "postprocessing": "@test#postprocessing",
                "key_val_metric": "@test#key_metric",
                "amp": "@use_amp",
            },
        },
        "settings": _settings(),
        "model_info": model_info(),
    }


def model_info() -> dict[str, Any]:
    """What evaluation and inference need to rebuild the segmenter (the matching is added when it is learnt)."""
    return {
        "task": "segmentation",
        "method": "picie",
        "classes": "@classes",
        "multi_label": "@multi_label",
        "image_size": "@image_size",
        "encoder": "@encoder",
        "n_clusters": "@n_clusters",
        "grayscale_input": "$@s4mi_monai.bundle.as_bool(@grayscale_input)",
    }


def _settings() -> dict[str, Any]:
    names = [
        "seed",
        "image_size",
        "encoder",
        "pretrained_weights",
        "pretrain_epochs",
        "pretrain_batch_size",
        "pretrain_lr",
        "pretrain_lr_step",
        "pretrain_lr_gamma",
        "n_clusters",
        "cluster_weighting",
        "cluster_matching",
        "kmeans_init_batches",
        "kmeans_iterations",
        "min_scale",
    ]
    return {
        "bundle": "@bundle_name",
        "datalist": "$@data['datalist_path']",
        "label_fraction": 0.0,  # no mask is read in training
        **{name: f"@{name}" for name in names},
        "grayscale_input": "$@s4mi_monai.bundle.as_bool(@grayscale_input)",
        "n_training_images": "$len(@picie#dataset)",
        "device": "$str(@torch_device)",
        "amp": "@use_amp",
    }


def _pretrain(skip_if_done: bool) -> str:
    """Train PiCIE, then write its encoder (for fine-tuning) and the whole network (for the final clustering)."""
    skip = ", skip_if_done=True" if skip_if_done else ""
    return (
        "$@s4mi_monai.bundle.pretrain(@picie#trainer, @picie#run_handlers, "
        f"[(@s4mi_monai.distributed.unwrap(@picie#network).encoder, @pretrained_backbone), (@picie#network, @picie_network_path)]{skip})"
    )


def _finetune_section(spec: BundleSpec) -> dict[str, Any]:
    """The supervised U-Net on the labeled fraction, in ``@output_dir``, its encoder from ``--pretrained_backbone``."""
    return {
        "output_dir": "@output_dir",
        **parts.output_paths(FINETUNE),
        **supervised.model_objects(spec, FINETUNE, pretrained_weights=None),
        **supervised.training_objects(spec, FINETUNE),
    }


def picie_train_config(spec: BundleSpec) -> dict[str, Any]:
    """``train.json`` of a PiCIE bundle."""
    return {
        **parts.identity(spec),
        **_knobs(spec),
        **parts.data_and_device(),
        **supervised.transforms(spec),
        "picie": _picie_section(),
        **_evaluation(spec),
        "supervised": _finetune_section(spec),
        "initialize": [
            "$monai.utils.set_determinism(seed=@seed)",
            "$@s4mi_monai.bundle.configure_logging()",
            "$@s4mi_monai.networks.check_segmentation_architecture(@architecture, @image_size)",
        ],
        "pretrain": [_pretrain(skip_if_done=False)],
        "run": [
            _pretrain(skip_if_done=True),
            "$@s4mi_monai.bundle.with_weights(@s4mi_monai.distributed.unwrap(@picie#network), @picie_network_path)",
            "$@s4mi_monai.bundle.evaluate_clusters(@segmenter, @validate#dataloader, @test#evaluator, @model_path, @metrics_path, "
            "@settings, @model_info, @cluster_matching, @kmeans_init_batches, @kmeans_iterations, @seed)",
        ],
        "training": "%run",
        "finetune": [
            "$@s4mi_monai.bundle.refuse_to_replace(@output_dir, 'picie')",
            f"$@s4mi_monai.bundle.load_backbone({FINETUNE.ref('network')}, @pretrained_backbone)",
            *supervised.training_steps(FINETUNE),
        ],
        "benchmark": [
            "$@s4mi_monai.engines.benchmark_clustering(@picie#trainer, @picie#clustering)",
            "$@s4mi_monai.engines.benchmark(@picie#trainer, 'picie', @benchmark_steps)",
            f"$@s4mi_monai.engines.benchmark({FINETUNE.ref('train#trainer')}, 'finetune', @benchmark_steps)",
        ],
    }


DEMO_MODEL = {"encoder": "resnet34", "n_clusters": 2, "grayscale_input": False, "matching": "hungarian", "cluster_to_class": {"0": 0, "1": 1}}
"""What evaluation and inference assume before any training wrote a ``model_info.json``."""


def _from_model_info() -> dict[str, Any]:
    return {knob: f"$@model_info['{knob}']" for knob in ("encoder", "n_clusters", "grayscale_input")}


def picie_evaluate_config(spec: BundleSpec) -> dict[str, Any]:
    """``evaluate.json``: the saved segmenter on the test split, with the matching saved beside it (no new matching)."""
    knobs = parts.run_knobs(spec)
    return {
        **parts.identity(spec),
        **{key: knobs[key] for key in ("datalist", "demo_datalist", "dataset_dir", "seed", "demo", "batch_size", "selection_metric")},
        **{key: knobs[key] for key in ("red_normalization", "num_workers", "device", "amp", "output_dir")},
        **parts.data_and_device(),
        "model_path": "$os.path.join(@output_dir, 'model.pt')",
        "metrics_path": "$os.path.join(os.path.dirname(@model_path), 'metrics.json')",
        "model_info": parts.read_model_info({**DEMO_MODEL, "image_size": 64}),
        "image_size": "$@model_info['image_size']",
        **_from_model_info(),
        "segmenter_def": segmenter(),
        "segmenter": "$@segmenter_def.to(@torch_device)",
        "preprocessing": parts.preprocessing(spec, with_label=True),
        **parts.evaluation_definitions(spec),
        "test": _evaluation(spec)["test"],
        "settings": {"bundle": "@bundle_name", "datalist": "$@data['datalist_path']", "seed": "@seed", "label_fraction": 0.0},
        "initialize": ["$monai.utils.set_determinism(seed=@seed)", "$@s4mi_monai.bundle.configure_logging()"],
        "run": ["$@s4mi_monai.bundle.report_cluster_metrics(@segmenter, @test#evaluator, @model_path, @metrics_path, @settings, @model_info)"],
        "evaluating": "%run",
    }


def picie_inference_config(spec: BundleSpec) -> dict[str, Any]:
    """``inference.json``: the cluster map and the matched mask of every new image (the matching comes with the model)."""
    output = supervised.inference_output(spec)
    *activation_and_inversion, save_mask = output["postprocessing"]["transforms"][: -len(supervised.MASK_FOR_CLIENTS)]
    cluster_map = {
        "_target_": "$@s4mi_monai.transforms.SaveClusterMapd",
        "keys": "pred",
        "output_dir": "@output_dir",
        "num_clusters": "$len(@model_info['cluster_to_class'])",
    }
    to_classes = {"_target_": "$@s4mi_monai.transforms.ClustersToClassesd", "keys": "pred", "cluster_to_class": "$@model_info['cluster_to_class']"}
    loading = supervised.inference_data(spec)
    loading["preprocessing"]["transforms"] = [
        step for step in loading["preprocessing"]["transforms"] if step not in parts.normalization()
    ]  # PiCIE sees [0, 1] images, as in training (S4MI)
    return {
        **parts.identity(spec),
        **supervised.inference_head(spec, DEMO_MODEL),
        **_from_model_info(),
        "network_def": segmenter(output="clusters"),
        "network": "$@network_def.to(@torch_device)",
        **loading,
        "inferer": output["inferer"],
        "postprocessing": {"_target_": "Compose", "transforms": [*activation_and_inversion, cluster_map, to_classes, save_mask, *supervised.MASK_FOR_CLIENTS]},
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": "@model_path", "load_dict": {"model": "@network"}, "map_location": "@torch_device"},
        ],
        "evaluator": dict(supervised.INFERENCE_EVALUATOR),
        "initialize": ["$@s4mi_monai.bundle.configure_logging()", "$@s4mi_monai.bundle.require_model(@model_path)"],
        "run": supervised.INFERENCE_RUN,
        "inferring": "%run",
    }
