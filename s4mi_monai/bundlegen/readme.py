"""Each bundle's ``docs/README.md``: generated from the same spec as its configs, results kept by hand.

The part between ``RESULTS_START`` and ``RESULTS_END`` holds measured results and the commands that
produced them; regeneration keeps it.
"""

from __future__ import annotations

from s4mi_monai.bundlegen.registry import BundleSpec

RESULTS_START = "<!-- results: kept when the README is regenerated -->"
RESULTS_END = "<!-- /results -->"
NO_RESULTS = "No measured results on real data yet for this bundle."


def _kept_results(existing: str) -> str:
    if RESULTS_START in existing and RESULTS_END in existing:
        return existing.split(RESULTS_START, 1)[1].split(RESULTS_END, 1)[0].strip()
    return NO_RESULTS


SSL_METHODS = {
    "dino": (
        "- Stage 1, label-free pretraining on every training image (never validation or test): DINO (Caron et al. 2021), the "
        "official recipe. Student and EMA teacher = backbone + DINO head (MLP 2048-2048-256, L2-normalised bottleneck, "
        "weight-normalised last layer to 65,536 prototypes; `--head_*` knobs). Loss: cross-entropy between the teacher's centred, "
        "sharpened softmax on the 2 global crops and the student's softmax on every other crop (student temperature 0.1, teacher "
        "temperature warm-up 0.04 to 0.07, centre momentum 0.9). AdamW with lr warm-up then cosine (0.0005 x batch / 256), weight "
        "decay cosine 0.04 to 0.4, teacher EMA momentum cosine 0.996 to 1, per-parameter gradient clipping at 3, last layer frozen "
        "in the first epoch. Multi-crop: 2 global crops (scale 0.4-1) and `--n_local_crops` local crops at 3/7 of the size "
        "(scale 0.05-0.4; 96 px for 224), flips, colour jitter, grayscale, blur, solarisation, each view its own draw, made "
        "batch-wise on the training device. ViT position embeddings are interpolated for the small crops.\n"
        "- Preset `configs/lucidrains.json` (pass it after train.json): the simplified variant the S4MI authors ran (student "
        "temperature 0.9, hidden width 256, constant EMA 0.9, 2 local crops at the global size seen by the student only, constant "
        "Adam 3e-4), for comparison.\n"
        "- Preset `configs/small_data.json`: DINO sized for a few thousand images (3,000 steps via `--pretrain_max_iterations`, "
        "teacher momentum from 0.99, constant teacher temperature 0.04, 2,048 prototypes, local crops at least 3/7 of the size, blur "
        "scaled to the resolution, and for ResNets the official SGD recipe); see docs/self_supervised.md.\n"
        "- Stage 2, fine-tuning: the teacher's backbone with a new linear head, trained exactly as `supervised_cls` on "
        "`--label_fraction` of the labels (default 0.1)."
    ),
    "cass": (
        "- Stage 1, label-free pretraining on every training image (never validation or test): CASS (Singh et al. 2023). A CNN "
        "(`--cnn_backbone`, ResNet-50) and a transformer (`--transformer_backbone`, ViT-B/16) see the same augmented view; each has a "
        "linear projection to 1,000 dimensions; loss 2 - 2 cos between the two L2-normalised outputs, symmetric, both networks "
        "updated every step with their own Adam (lr 1e-3, cosine per iteration). Gradients are zeroed every step (the reference "
        "notebook never zeroed them).\n"
        "- `--stabiliser predictor` (opt-in, a deviation from CASS): each branch gets a SimSiam predictor and predicts the other "
        "branch's projection held fixed (stop-gradient), which keeps the outputs from collapsing to a constant; see "
        "docs/self_supervised.md for what it measured.\n"
        "- `--stabiliser variance` (opt-in, a deviation from CASS): VICReg's variance and covariance terms on each branch's "
        "normalised outputs are added to the CASS loss, so a constant output costs instead of being free; CASS's one view, "
        "two architectures and symmetric updates are kept.\n"
        "- Stage 2, fine-tuning: each network on its own with a new linear head, trained exactly as `supervised_cls` on "
        "`--label_fraction` of the labels (default 0.1); both are reported (`cnn/`, `transformer/`), the `--report_branch` (default "
        "`cnn`) is copied to `model.pt` for evaluation and inference."
    ),
}


CROSS_TEACHING = (
    "- Networks, trained together from random initialisation: a CNN, `s4mi_monai.networks.SSL4MISUNet` (the SSL4MIS U-Net: "
    "channels 16-32-64-128-256, dropout 0.05-0.5 in the encoder, bilinear decoder, about 1.8 M parameters), and a transformer, "
    "`s4mi_monai.networks.SwinUNet` (a pure-transformer 2D Swin-UNet from MONAI's Swin blocks: patch 4, window 7, embedding "
    "`--transformer_embed_dim` (96; 24 for the demo), depths 2-2-2-2, heads 3-6-12-24, patch-expanding decoder with skips, final "
    "x4 expansion and a 1x1 convolution). `--transformer swin_unetr` selects MONAI's `SwinUNETR(spatial_dims=2)` instead; "
    "`--pretrained_transformer_weights PATH` loads a local ImageNet Swin-T checkpoint into the Swin-UNet encoder (and, as the reference, "
    "its mirrored decoder). Both need sides that are multiples of 32 (`--image_size` 64, 96, ..., 224).\n"
    "- Batches: `--labeled_batch_size` labeled + `--unlabeled_batch_size` unlabeled images (8 + 8; 4 + 4 for the demo) from a "
    "two-stream sampler over the labeled subset of `--label_fraction` (default 0.5) and the other training images; every "
    "labeled image is seen every epoch. At 1.0 every image is labeled: batches hold 16 labeled images and the cross-teaching "
    "term acts on their predictions.\n"
    "- Loss per network: 1/2 (CE + Dice) on the labeled images, plus lambda(t) times the Dice between its softmax on the "
    "unlabeled images and the other network's detached argmax (SSL4MIS Dice: squared denominators, background included). "
    "lambda(t) = 0.1 exp(-5 (1 - t/T)^2) up to T, then 0.1, with T = `--consistency_ramp` (0.4) of the run, so that the term "
    "really reaches `--consistency` (in the S4MI code it never exceeded about 0.011).\n"
    "- Optimiser: Adam per network, lr 3.6e-4, weight decay 1e-5, cosine over all iterations (the paper); "
    "`configs/ssl4mis.json` (pass it after train.json) switches to SGD 0.01, momentum 0.9, weight decay 1e-4, poly decay (SSL4MIS).\n"
    "- Augmentation: rotation and flips drawn once for image and mask together, colour jitter on the image.\n"
    "- Model selection: each network at its best validation `--selection_metric` (default `iou_per_image_mean`); both are "
    "scored on the test split, the `--report_branch` (default `cnn`, as Luo et al.) is the bundle's `model.pt`."
)


PICIE = (
    "- No mask is read in training: PiCIE (Cho et al., CVPR 2021) learns from clusters of its own pixel embeddings, on every "
    "training image.\n"
    "- Network: `s4mi_monai.networks.PiCIENet`, a MONAI ResNet (`--encoder resnet34`, or `resnet18`; standard stem; optional "
    "local ImageNet weights, `--pretrained_weights PATH`) with a Panoptic-FPN decoder (1x1 laterals to 128 channels, top-down "
    "bilinear upsample-and-add, no smoothing) giving a stride-4, 128-d map, L2-normalised per pixel.\n"
    "- Each epoch (`s4mi_monai.handlers.PiCIEClustering`, before the epoch, on the training device): two views of every image, "
    "drawn once per image and epoch; photometric jitter on both (brightness, contrast, saturation, hue, grayscale p = 0.2 - the "
    "grayscale the reference meant to apply but never did - and blur); the geometric transform (random resized crop, scale "
    "`--min_scale` to 1, and flip) on the input of view 1 and on the feature map of view 2; mini-batch k-means of all pixels "
    "of each view in torch (`--n_clusters`, K = 2 as S4MI; initial centroids by k-means++ on the first `--kmeans_init_batches` "
    "batches, `--kmeans_iterations` Lloyd steps, then running updates). Then one pass of training "
    "(`s4mi_monai.engines.PiCIETrainer`) against the frozen centroids: within-view and cross-view cross-entropy "
    "(`s4mi_monai.losses.PiCIELoss`), weighted by the cluster frequencies as the reference (`--cluster_weighting frequency`; "
    "`inverse_frequency` or `none` as switches: frequency weighting is what S4MI trained with, and it lets the dominant "
    "cluster dominate the loss).\n"
    "- Recipe (S4MI fork): Adam lr 1e-4, step decay x0.502 every 5 epochs, 50 epochs, batch 64; RGB input (`--grayscale_input "
    "true` for S4MI's 3-channel gray), no ImageNet normalisation. S4MI trained at 480 px (`--image_size 480`); the default "
    "is 224 like the other segmentation bundles.\n"
    "- Evaluation (the reference's protocol): final centroids from scratch on the validation images (their masks are not "
    "read), each test pixel assigned to its best centroid (inner product, upsampled bilinearly), clusters matched to classes "
    "over the whole test split (`--cluster_matching hungarian`, one-to-one with `scipy.optimize.linear_sum_assignment`; "
    "`majority`, each cluster to its majority class, for K > 2). The matching is saved with the model, so inference needs no "
    "labels.\n"
    "- Fine-tuning (`run finetune`): the PiCIE encoder initialises the supervised ResNet U-Net of `supervised_seg` at any "
    "`--label_fraction`, so PiCIE also enters the label-efficiency comparison as a pretraining method."
)


CONTRASTIVE = (
    "- Three stages (Hu et al., MICCAI 2021), all on one network: the reference U-Net (`--architecture contrastive_unet`: "
    "64 initial filters, InstanceNorm, LeakyReLU, `s4mi_monai.networks.ContrastiveUNet`) or the cross-teaching CNN "
    "(`--architecture ssl4mis_unet`), so the method compares with cross teaching on one network.\n"
    "- Stage 1, global (`run pretrain_global`): SimCLR NT-Xent (temperature `--global_temperature` 0.5) between two views of "
    "every training image (never validation or test; the reference used test images too), each with its own intensity "
    "(brightness, gamma, noise) and spatial (rotation, scale, elastic) draws; the projection head (GAP, two linear layers, "
    "L2 norm) is trained with the network (the reference's optimiser never held it).\n"
    "- Stage 2, local (`run pretrain_local`): the supervised pixel-wise contrastive loss on the labeled images of "
    "`--label_fraction` (the reference used every label, test included), two intensity-only views so pixels correspond, "
    "pixels sampled with `--local_sampling stride` (every `--local_stride`-th pixel) or `block` (`--local_block_size` "
    "blocks, the mode that crashed as released), temperature `--local_temperature` 0.1, foreground anchors "
    "(`--anchor_background true` also anchors background), computed in chunks of `--pixel_loss_chunk` anchors so memory "
    "stays bounded; batches without foreground are skipped (no optimiser step).\n"
    "- Stage 3 (`run finetune`): cross-entropy + Dice (`DiceCELoss`) on the same labeled images, Adam 5e-4, batch 8, "
    "starting from stage 2's network (or stage 1's encoder).\n"
    "- `--pretraining` picks the stages, the paper's ablation: `global_local` (default), `global_unsupervised_local` (the "
    "pixel-identity loss the released code actually ran), `global`, `none` (the supervised baseline with the same network, "
    "augmentation and recipe)."
)


def _method(spec: BundleSpec) -> str:
    if spec.contrastive:
        return CONTRASTIVE
    if spec.unsupervised:
        return PICIE
    if spec.semi_supervised:
        return (
            CROSS_TEACHING + f"\n- Fair baselines: `supervised_seg_{spec.profile.name}` trains the same networks on the masks only "
            "(`--architecture ssl4mis_unet`, `--architecture swin_unet`), built by the same constructors with the same arguments; "
            "`--max_iterations N` gives every label fraction the same number of optimiser steps."
        )
    if spec.method in SSL_METHODS:
        return (
            SSL_METHODS[spec.method]
            + "\n- Collapse monitoring: every pretraining epoch logs the effective-rank collapse score (dimensional collapse), "
            + "the mean pairwise cosine and spread of the L2-normalised outputs (constant collapse) "
            + ("and the teacher's entropy next to log K, " if spec.method == "dino" else "")
            + "and warns when the representation collapses ([docs/self_supervised.md](../../../docs/self_supervised.md#monitoring-collapse))."
            + (
                "\n- From random initialisation CASS collapses to a constant output within a few dozen steps (the paper starts from "
                "ImageNet weights: `--pretrained_weights FILE`); a run on a datalist then stops (`--on_constant_collapse warn` to continue)."
                if spec.method == "cass"
                else ""
            )
        )
    if spec.task == "classification":
        return (
            "- Network: `s4mi_monai.networks.Classifier`, a MONAI ResNet with the standard 7x7/2 stem "
            "(`--backbone resnet50`, default on real data; `resnet18` for the demo) or a MONAI ViT "
            "(`--backbone vit_b16`, also `vit_s16`, `vit_ti16`) plus a linear head.\n"
            "- Initialisation: random, or ImageNet weights from a local file (`--pretrained_weights PATH`: a torchvision "
            "ResNet or timm ViT state dict, or one of our checkpoints); the keys loaded and missing are logged. Nothing is downloaded.\n"
            "- Loss: cross-entropy (multi-class) or BCE (multi-label); `--loss_kind focal` for sigmoid focal loss; "
            "`--class_weighting inverse_frequency` weights classes by N / (C n_c) from the labeled training items.\n"
            "- Optimiser: Adam, lr 3.6e-4, weight decay 1e-5, cosine schedule over all iterations (paper section 3.3).\n"
            "- Augmentation: rotation (+-15 degrees), horizontal and vertical flips, colour jitter; images resized to `--image_size`.\n"
            "- Model selection: the epoch with the best validation `--selection_metric` (default `f1_macro`); the test split is used only for the final report."
        )
    return (
        "- Network: `s4mi_monai.networks.ResNetUNet` (`--architecture resnet_unet`, the default), a U-Net whose encoder is the "
        "full MONAI ResNet-34 (`--encoder`; standard stem, all four stages; the reference cut it to depth 3) with an smp-style "
        "decoder; any input size.\n"
        "- Fair baselines against cross teaching, the same networks trained on the masks only (built by "
        "`s4mi_monai.networks.build_segmentation_network` with the constructors and arguments of `crossteach_seg`): "
        "`--architecture ssl4mis_unet`, the cross-teaching CNN (`SSL4MISUNet`, about 1.8 M parameters against the ResNet-34 "
        "U-Net's 24 M; random initialisation); `--architecture swin_unet`, its Swin-UNet (embedding `--transformer_embed_dim`, "
        "96; 24 for the demo), or `swin_unetr` (MONAI `SwinUNETR`, feature size `--transformer_embed_dim`, a multiple of 12). "
        "The transformers need sides that are multiples of 32 (`--image_size` 64, 96, ..., 224; checked before any data is "
        "read). `model_info.json` names the network, so evaluation and inference rebuild it without the knobs.\n"
        "- Initialisation: random, or a local torchvision ResNet-34 state dict for the encoder (`--pretrained_weights PATH`; "
        "for `swin_unet` an official-layout Swin checkpoint, as cross teaching's `--pretrained_transformer_weights`).\n"
        "- Loss: 1/2 (Dice + cross-entropy) (`monai.losses.DiceCELoss`).\n"
        "- Optimiser: Adam, lr 3.6e-4, weight decay 1e-5, cosine schedule over all iterations.\n"
        "- Augmentation: rotation and flips drawn once for image and mask together (the reference drew them "
        "independently, misaligning masks), colour jitter on the image.\n"
        "- Model selection: best validation `--selection_metric` (default `iou_per_image_mean`)."
    )


def _metrics(spec: BundleSpec) -> str:
    if spec.task == "classification":
        extra = " and the ISIC-2017 challenge score (mean of the melanoma and seborrheic-keratosis AUCs)" if spec.profile.challenge else ""
        return (
            "`metrics.json` holds the test-split metrics of the shared evaluator (`s4mi_monai.metrics.classification_metrics`): "
            "accuracy, balanced accuracy, macro and micro F1, per-class and macro recall and precision, one-vs-rest AUC per class "
            f"and macro{extra}; for multi-label data per-label F1 and AUC at a 0.5 threshold. The paper's number as the reference "
            "code computed it (micro recall, logged there as F1) is reported as `reference_micro_recall_as_f1`. Undefined values "
            "(an AUC for a class absent from the split) are `null` and named in `*_undefined`."
        )
    picie = (
        " For PiCIE, on the matched masks, plus the reference's scores: `pixel_accuracy`, `iou_all_classes` and their mean "
        "`miou_all_classes` (background included), the `cluster_to_class` matching and the `cluster_histogram`."
        if spec.unsupervised
        else ""
    )
    return (
        "`metrics.json` holds the test-split metrics of the shared evaluator (`s4mi_monai.metrics.segmentation_metrics`): "
        "foreground IoU and Dice pooled over the split (`iou_pooled`, `dice_pooled`) and averaged per image "
        "(`iou_per_image_mean`, `dice_per_image_mean`). Images whose ground truth is empty are counted (`n_empty_gt`) and scored "
        "separately (`empty_gt_correct_rate`), not silently scored 0." + picie
    )


def _ssl_overrides(spec: BundleSpec) -> str:
    if spec.contrastive:
        return (
            "\nStages: `--pretraining global_local|global_unsupervised_local|global|none`, `--global_epochs N`, "
            "`--global_batch_size N`, `--global_lr LR`, `--global_temperature T`, `--local_epochs N`, `--local_batch_size N`, "
            "`--local_lr LR`, `--local_temperature T`, `--local_sampling stride|block`, `--local_stride N`, "
            "`--local_block_size N`, `--anchor_background true|false`, `--pixel_loss_chunk N`, "
            "`--pretrained_global_backbone FILE` / `--pretrained_local_backbone FILE` (where the stages write and read)."
        )
    if spec.unsupervised:
        return (
            "\nPiCIE: `--pretrain_epochs N`, `--pretrain_batch_size N`, `--pretrain_lr LR`, `--n_clusters K`, "
            "`--cluster_weighting frequency|inverse_frequency|none`, `--cluster_matching hungarian|majority`, "
            "`--kmeans_init_batches N`, `--kmeans_iterations N`, `--min_scale S`, `--grayscale_input true|false`, "
            "`--pretrained_backbone FILE` (the encoder `finetune` starts from), `--channels_last true|false`."
        )
    if spec.semi_supervised:
        return (
            "\nCross teaching: `--labeled_batch_size N`, `--unlabeled_batch_size N`, `--consistency W`, `--consistency_ramp F`, "
            "`--transformer swin_unet|swin_unetr`, `--transformer_embed_dim N`, `--pretrained_transformer_weights PATH`, `--report_branch cnn|transformer`, "
            "`--learning_rate LR`, `--channels_last true|false`, `--compile true|false`."
        )
    if not spec.self_supervised:
        return ""
    common = "`--pretrain_epochs N`, `--pretrain_batch_size N`, `--pretrain_lr LR`, `--pretrain_image_size N`, `--channels_last true|false`, `--compile true|false`"
    if spec.method == "dino":
        return (
            f"\nPretraining: {common}, `--pretrained_backbone` (the backbone file fine-tuning starts from), `--n_local_crops N`, `--local_crop_size N`, "
            "`--head_out_dim N`, `--head_hidden_dim N`, `--student_temp T`, `--teacher_temp T`, `--teacher_momentum M`, `--clip_grad C`; "
            "`--pretrained_weights PATH` initialises the pretraining backbone (ImageNet weights, as the paper)."
        )
    return (
        f"\nPretraining: {common}, `--cnn_backbone NAME`, `--transformer_backbone NAME`, `--projection_dim N`, "
        "`--pretrained_cnn_backbone` / `--pretrained_transformer_backbone` (the files fine-tuning starts from), "
        "`--report_branch cnn|transformer`; `--pretrained_weights PATH` initialises the CNN."
    )


def _ssl_outputs(spec: BundleSpec) -> str:
    if spec.contrastive:
        return (
            "\nThe stages write `pretrained_global_backbone.pt` and `pretrained_local_backbone.pt` (each the whole network "
            "after the stage) and `pretraining_global/`, `pretraining_local/` (history, curves, TensorBoard; the local history "
            "counts skipped batches). A restarted `training` skips a finished stage and says so."
        )
    if spec.unsupervised:
        return (
            "\nPiCIE's `training` writes `pretrained_backbone.pt` (the encoder, for `finetune`), `picie_network.pt` (encoder and "
            "decoder), `pretraining/` (history with the k-means distances, curves, TensorBoard), and `model.pt`: the network with "
            "its final centroids and the matching, with `model_info.json` (`cluster_to_class`), `metrics.json` and "
            "`test_samples.json`. There is no validation-based selection (that would read masks): the model is the last epoch's. "
            "`finetune` writes the U-Net's `model.pt`, `metrics.json`, `history.json` in its own `--output_dir` (it refuses to "
            "overwrite a PiCIE model); evaluate such a U-Net with `supervised_seg_*/configs/evaluate.json`."
        )
    if spec.semi_supervised:
        return (
            "\nEach network's selected weights, `model_info.json` and test `metrics.json` are in `cnn/` and `transformer/`; "
            "`metrics.json` at the top holds the reported branch and both under `branches`; `history.json` records both networks' "
            "validation and the mean loss terms and lambda of every epoch. `evaluate.json` scores `model.pt`, or either network "
            "with `--branch cnn|transformer`; `inference.json` predicts with the reported network, or `--predict_with "
            "cnn|transformer|mean` (mean: the average of both softmaxes; TorchScript export covers one network at a time)."
        )
    if spec.method == "dino":
        return "\nPretraining writes `pretrained_backbone.pt` (the teacher's backbone) and `pretraining/` (history, curves, TensorBoard)."
    if spec.method == "cass":
        return (
            "\nPretraining writes `pretrained_cnn_backbone.pt`, `pretrained_transformer_backbone.pt` and `pretraining/`; fine-tuning "
            "writes `cnn/` and `transformer/` "
            "(each with its model, metrics and history); `metrics.json` at the top holds the reported branch and both under `branches`. "
            "`evaluate.json` scores `model.pt` (the reported branch), or either network with `--branch cnn|transformer`."
        )
    return ""


def _saliency(spec: BundleSpec) -> str:
    if spec.task != "classification":
        return ""
    return (
        "\n\nGradient saliency maps (image, saliency, overlay, as the paper's Figure 2): `--saliency_images N` on `evaluate.json` "
        "writes them for N test images into `saliency/` beside `metrics.json`; `s4mi saliency --bundle NAME --images DIR` for any folder "
        "(see `docs/saliency.md`)."
    )


def _common_overrides(spec: BundleSpec) -> str:
    if spec.semi_supervised:
        return " (`--batch_size`: evaluation only)"
    if spec.task == "classification":
        return ",\n`--pretrained_weights PATH`, `--backbone NAME`, `--loss_kind ce|bce|focal`, `--class_weighting inverse_frequency`"
    return (
        ",\n`--pretrained_weights PATH`, `--architecture resnet_unet|ssl4mis_unet|swin_unet|swin_unetr`, "
        "`--encoder resnet18|resnet34|resnet50`, `--transformer_embed_dim N`"
    )


def _max_iterations(spec: BundleSpec) -> str:
    """What ``--max_iterations`` counts in this bundle (the overrides paragraph)."""
    if spec.semi_supervised:
        counted = "optimiser steps of the two networks; an epoch is one pass of the two-stream sampler over the labeled images"
    elif spec.self_supervised:
        counted = "optimiser steps of each fine-tuning; pretraining keeps `--pretrain_epochs`"
    else:
        counted = "optimiser steps"
    return (
        f"\n`--max_iterations N` ({counted}) replaces `--max_epochs` by ceil(N / iterations per epoch), so that runs at "
        "different label fractions get (nearly) equal steps; the learning-rate schedule follows, and `metrics.json` records "
        "`max_iterations`, `epochs`, `iterations_per_epoch` and `total_steps` under `settings`."
    )


def _train_command(spec: BundleSpec, root: str, datalist: str, fraction: str, fraction_words: str, paper: str) -> str:
    """The first command of the README: the method at the paper setting on the user's data."""
    if spec.unsupervised:
        return f"""# train at the S4MI setting on your data (no masks read; --image_size 480 as S4MI, 224 by default)
python -m monai.bundle run training --config_file {root}/configs/train.json \\
    --datalist {datalist} --image_size 224 --pretrain_epochs 50"""
    return f"""# train at the paper setting on your data ({fraction_words} of the labels; any fraction works)
python -m monai.bundle run training --config_file {root}/configs/train.json \\
    --datalist {datalist} --label_fraction {fraction} {paper}"""


def _fair_baselines(spec: BundleSpec, root: str, datalist: str, fraction: str) -> str:
    """Commands of the fair comparisons: equal optimiser steps for every bundle, equal networks for the supervised ones."""
    # SSL4MIS fixes 30,000 iterations for cross teaching; the classification references fix epochs
    iterations = "30000" if spec.task == "segmentation" else "5000"
    steps = f"""
# equal optimiser steps at every label fraction: epochs = ceil(N / iterations per epoch)
python -m monai.bundle run training --config_file {root}/configs/train.json --datalist {datalist} \\
    --label_fraction {fraction} --max_iterations {iterations}
"""
    if spec.method == "supervised_seg":
        return steps + f"""
# fair baselines against crossteach_seg_{spec.profile.name}: its CNN, or its Swin-UNet, trained on the masks only
python -m monai.bundle run training --config_file {root}/configs/train.json --architecture ssl4mis_unet
python -m monai.bundle run training --config_file {root}/configs/train.json --datalist {datalist} \\
    --label_fraction 1.0 --image_size 224 --architecture ssl4mis_unet --max_iterations 30000
python -m monai.bundle run training --config_file {root}/configs/train.json --datalist {datalist} \\
    --label_fraction 1.0 --image_size 224 --architecture swin_unet --transformer_embed_dim 96 --max_iterations 30000

# TorchScript export of a Swin-UNet or SwinUNETR model: traced at a fixed input size (MONAI's Swin blocks do not script)
python -m monai.bundle ckpt_export network_def --filepath {root}/models/model.ts --ckpt_file {root}/models/model.pt \\
    --meta_file {root}/configs/metadata.json --config_file {root}/configs/inference.json \\
    --use_trace true --input_shape "[1, 3, 224, 224]"
"""
    if spec.method == "supervised_cls":
        return steps + f"""
# a supervised ViT of the size CASS uses: ViT-B/16 as in the paper (vit_ti16 is the demo CASS ViT)
python -m monai.bundle run training --config_file {root}/configs/train.json --datalist {datalist} \\
    --label_fraction {fraction} --image_size 224 --backbone vit_b16
python -m monai.bundle run training --config_file {root}/configs/train.json --backbone vit_ti16
"""
    return steps


GENERATOR_MODULES = {
    "supervised": "s4mi_monai/bundlegen/supervised.py",
    "self_supervised": "s4mi_monai/bundlegen/self_supervised.py",
    "semi_supervised": "s4mi_monai/bundlegen/crossteach.py",
    "contrastive": "s4mi_monai/bundlegen/contrastive.py",
    "unsupervised": "s4mi_monai/bundlegen/unsupervised.py",
}


def _header(spec: BundleSpec) -> str:
    """How to install what the configs call, and where they are generated from (so nobody edits them by hand)."""
    module = GENERATOR_MODULES[spec.method_info.family]
    return (
        "> **Install first.** The configs call the `s4mi_monai` package: from the repository root, `make install` (or\n"
        "> `pip install -r requirements.txt && pip install -e .`), then run the commands below from the repository root.\n"
        ">\n"
        "> **Generated files.** `configs/*.json`, `configs/logging.conf` and this README are written by `s4mi bundles` from\n"
        f"> `{module}` (shared sections: `s4mi_monai/bundlegen/parts.py`; the list of bundles:\n"
        "> `s4mi_monai/bundlegen/registry.py`). Change the generator and rerun `s4mi bundles`; edits to the files are\n"
        "> overwritten, except the Results block below. Map of the method's code: [docs/methods_map.md](../../../docs/methods_map.md)."
    )


def _slides_command(spec: BundleSpec, root: str) -> str:
    if spec.unsupervised:
        return ""
    what = "masks, overlays and QuPath outlines" if spec.task == "segmentation" else "per-window and per-slide scores"
    return (
        f"# whole slides (pyramidal TIFF, SVS) and very large images, read by regions at native resolution: {what}\n"
        f"python -m monai.bundle run slides --config_file {root}/configs/inference.json --input_dir slides --output_dir slide_predictions\n"
    )


def _several_gpus(root: str, datalist: str) -> str:
    """How to train on several GPUs."""
    return f"""```bash
torchrun --standalone --nproc_per_node 4 -m monai.bundle run training \\
    --config_file "['{root}/configs/train.json','{root}/configs/multi_gpu_train.json']" --datalist {datalist}
```

`configs/multi_gpu_train.json` (the model-zoo overlay) runs the same training with `DistributedDataParallel`
(NCCL on GPUs, gloo on CPUs): batch sizes are per GPU, rank 0 validates and writes every file, and a killed
run resumes from the same command. Several machines, SLURM, `sync_batchnorm` and what equals a one-GPU run:
[docs/distributed.md](../../../docs/distributed.md)."""


def readme(spec: BundleSpec, existing: str = "") -> str:
    """The README text for ``spec``, keeping the measured results of ``existing``."""
    name = spec.name
    root = f"bundles/{name}"
    prepare = {
        "isic": "s4mi prepare isic2017 --root /data/ISIC-2017 --out datalists/isic2017.json",
        "dermofit": "s4mi prepare dermofit --root /data/Dermofit --out datalists/dermofit.json",
        "dermatomyositis": "s4mi prepare csv --csv /data/dm/labels.csv --multi_label --label_column phenotypes --patient_column patient --tile_size 480 --out datalists/dermatomyositis.json",
    }[spec.profile.name]
    datalist = prepare.split("--out ")[1]
    paper = "--backbone resnet50 --image_size 224 --max_epochs 50" if spec.task == "classification" else "--image_size 224 --max_epochs 50"
    if spec.method == "cass":
        paper = "--image_size 224 --max_epochs 50"
    if spec.contrastive:
        paper = "--image_size 224"  # the defaults are the reference's epochs and optimisers
    fraction = "0.5" if spec.semi_supervised else "0.1"
    fraction_words = "50 %" if spec.semi_supervised else "10 %"
    stages = ""
    if spec.semi_supervised:
        stages = f"""
# the SSL4MIS optimiser (SGD, poly decay) instead of the paper's Adam with cosine
python -m monai.bundle run training --config_file "['{root}/configs/train.json','{root}/configs/ssl4mis.json']" --datalist {{datalist}}

# throughput of training (images/s, step time, peak memory); no model or metrics written
python -m monai.bundle run benchmark --config_file {root}/configs/train.json --datalist {{datalist}}

# either network, or the mean of both softmaxes, for evaluation and inference
python -m monai.bundle run evaluating --config_file {root}/configs/evaluate.json --datalist {{datalist}} --branch transformer
python -m monai.bundle run --config_file {root}/configs/inference.json --input_dir new_images --predict_with mean

# TorchScript export of the Swin-UNet: traced at a fixed input size (MONAI's Swin blocks do not script)
python -m monai.bundle ckpt_export network_def --filepath {root}/models/transformer.ts --ckpt_file {root}/models/transformer/model.pt \\
    --meta_file {root}/configs/metadata.json --config_file {root}/configs/inference.json \\
    --predict_with transformer --use_trace true --input_shape "[1, 3, 224, 224]"
"""
    if spec.contrastive:
        stages = f"""
# one stage at a time, and the ablation of stage 2
python -m monai.bundle run pretrain_global --config_file {root}/configs/train.json --datalist {{datalist}} --output_dir results/contrast
python -m monai.bundle run pretrain_local --config_file {root}/configs/train.json --datalist {{datalist}} --label_fraction 0.1 --output_dir results/contrast
python -m monai.bundle run finetune --config_file {root}/configs/train.json --datalist {{datalist}} --label_fraction 0.1 --output_dir results/contrast
python -m monai.bundle run training --config_file {root}/configs/train.json --datalist {{datalist}} --pretraining none --output_dir results/contrast_baseline

# throughput of each stage (images/s, step time, peak memory); one stage per process gives each stage's own memory peak
python -m monai.bundle run benchmark --config_file {root}/configs/train.json --datalist {{datalist}}
python -m monai.bundle run benchmark_local --config_file {root}/configs/train.json --datalist {{datalist}} --image_size 224 --local_batch_size 8
"""
    if spec.unsupervised:
        stages = f"""
# one stage at a time: PiCIE only (writes the encoder), then a supervised U-Net from it at any label fraction
python -m monai.bundle run pretrain --config_file {root}/configs/train.json --datalist {{datalist}} --output_dir results/picie
python -m monai.bundle run finetune --config_file {root}/configs/train.json --datalist {{datalist}} --label_fraction 0.1 \\
    --pretrained_backbone results/picie/pretrained_backbone.pt --output_dir results/picie_finetune_10

# throughput: clustering (pixels/s), PiCIE training and fine-tuning steps (images/s, step time, peak memory)
python -m monai.bundle run benchmark --config_file {root}/configs/train.json --datalist {{datalist}}

# label-free floors scored the same way (Otsu, k-means on colours), to compare with `s4mi report`
s4mi floors {{datalist}} --out results/floors --image_size 224
"""
    if spec.self_supervised:
        pretrained = (
            "--pretrained_cnn_backbone CNN.pt --pretrained_transformer_backbone TRANSFORMER.pt"
            if spec.method == "cass"
            else "--pretrained_backbone BACKBONE.pt"
        )
        preset = (
            f"\n# the lucidrains DINO variant that the S4MI authors ran\npython -m monai.bundle run training "
            f"--config_file \"['{root}/configs/train.json','{root}/configs/lucidrains.json']\" --datalist {{datalist}}\n"
            f"\n# DINO sized for a few thousand images (3,000 steps, SGD for ResNets)\npython -m monai.bundle run training "
            f"--config_file \"['{root}/configs/train.json','{root}/configs/small_data.json']\" --datalist {{datalist}} --backbone resnet18\n"
            if spec.method == "dino"
            else ""
        )
        stages = f"""
# one stage at a time: label-free pretraining, then fine-tuning (from any pretrained backbone file)
python -m monai.bundle run pretrain --config_file {root}/configs/train.json --datalist {{datalist}}
python -m monai.bundle run finetune --config_file {root}/configs/train.json --datalist {{datalist}} --label_fraction 1.0 {pretrained}
{preset}
# throughput of pretraining and fine-tuning (images/s, step time, peak memory); no model or metrics written
python -m monai.bundle run benchmark --config_file {root}/configs/train.json --datalist {{datalist}}
"""
    inference_output = (
        "one `predictions.csv` with the class probabilities and the predicted class per image"
        if spec.task == "classification"
        else (
            ("`<image>_clusters.png` (the cluster map), " if spec.unsupervised else "")
            + "`<image>_mask.png` (0/255) and `<image>_overlay.png` per image, at the image's own size"
            + (
                " (whole slides are rescaled like the training tiles and predicted with a sliding window)"
                if spec.profile.slide_scale
                else " (sliding-window inference over the resized image)"
            )
        )
    )
    return f"""# {name}

{_header(spec)}

{spec.description}, on {spec.profile.title}. Part of [s4mi-monai](../../../README.md).

## Quick start (demo data, about 2 minutes on 2 CPU cores)

From the repository root (or from inside this folder, with `configs/...` paths):

```bash
python -m monai.bundle run training --config_file {root}/configs/train.json
```

With no `--datalist`, the bundle trains on the generated demo data (made on first use) at a demo size
(64 px{", ResNet-18" if spec.task == "classification" else ""}, a few epochs). The run ids `initialize`, `run` and `finalize` work as well
(`python -m monai.bundle run --config_file ...`).

## Data

Prepare a dataset once; every bundle and method then reads the same splits and labeled subsets:

```bash
{prepare}
```

`s4mi prepare` checks every file before anything trains (missing, corrupt or truncated images, mask sizes
and levels, unknown labels) and lists all problems at once.

## Method

{_method(spec)}

## Commands

```bash
{_train_command(spec, root, datalist, fraction, fraction_words, paper)}
{"" if spec.unsupervised else _fair_baselines(spec, root, datalist, fraction)}{stages.format(datalist=datalist)}
# the datalist is checked whole (files, labels of every split) before the first step; a killed run
# resumes from its last checkpoint when the same command is run again, and ends as an uninterrupted run would
# evaluate the trained model on the test split (writes metrics.json)
python -m monai.bundle run evaluating --config_file {root}/configs/evaluate.json --datalist {datalist}

# predict on a folder of new images (PNG, JPEG, TIFF, any size): every readable image is predicted, then
# unreadable images are named and the run exits with status 1; other files are listed as not images
python -m monai.bundle run --config_file {root}/configs/inference.json --input_dir new_images --output_dir predictions
{_slides_command(spec, root)}
# TorchScript export and checks
python -m monai.bundle ckpt_export network_def --filepath {root}/models/model.ts --ckpt_file {root}/models/model.pt \\
    --meta_file {root}/configs/metadata.json --config_file {root}/configs/inference.json
python -m monai.bundle verify_metadata --meta_file {root}/configs/metadata.json --filepath s4mi_monai/resources/meta_schema.json
python -m monai.bundle verify_net_in_out network_def --meta_file {root}/configs/metadata.json --config_file {root}/configs/inference.json
```

Overrides: `--datalist FILE`, `--dataset_dir DIR`, `--label_fraction F`, `--seed N`, `--max_epochs N`,
`--image_size N`, `--batch_size N`, `--device cpu|cuda`, `--amp true|false`, `--output_dir DIR`{_common_overrides(spec)}.{_ssl_overrides(spec)}
{_max_iterations(spec)}

## Several GPUs

{_several_gpus(root, datalist)}

## Outputs

In `--output_dir` (default `{root}/models/`): `model.pt` (the selected weights, a plain state dict for
`torch.load(..., weights_only=True)`), `model_info.json` (what inference needs to rebuild the network),
`metrics.json` (test metrics, the validation metric used for selection and the run's settings),
`history.json` and `curves.png` (training loss and validation metrics per epoch), `runs/` (TensorBoard),
and `checkpoint.pt` while a run is unfinished (deleted when it completes).{_ssl_outputs(spec)}

Inference writes {inference_output}.{_saliency(spec)}

## Metrics

{_metrics(spec)}

## Results

{RESULTS_START}
{_kept_results(existing)}
{RESULTS_END}

## Sharing this bundle

```bash
# configs, README, weights, checksums and the code the bundle runs, in one archive
s4mi pack {root} --out {spec.name}.zip --model_dir {root}/models
# on the collaborator's side: extract and verify
s4mi unpack {spec.name}.zip --out shared/
```

The archive runs inference, evaluation, training, `verify_metadata` (the schema is in `docs/`),
`verify_net_in_out` and `ckpt_export` with the registry packages of `configs/metadata.json` alone: the
code it needs travels in `scripts/s4mi_monai/`, which the configs load before any installed package. From
any folder, no `--bundle_root` needed. Preparing a new dataset (`s4mi prepare`) needs the package.
See [docs/sharing.md](../../../docs/sharing.md).

## MONAI Label

`configs/inference.json` defines `network_def`, `preprocessing`, `postprocessing`, `inferer` and
`device`, as MONAI Label's `BundleInferTask` expects; {"its postprocessing ends with the mask as a 2-D uint8 image at the input's size (PNG, NIfTI)" if spec.task == "segmentation" else "`/infer` returns the class probabilities"}.
Serve it with the sample app in [docs/monailabel](../../../docs/monailabel/README.md), which sets the task
type and keeps the bundle's own writers from writing into this folder; the versions that work together
are listed there.

## Limitations

Research use only; not a medical device. The demo data are synthetic and say nothing about clinical
performance.

## References

- Singh et al., "Shifting to Machine Supervision: annotation-efficient semi and self-supervised learning for
  automatic medical image segmentation and classification", Scientific Reports 2024.
"""
