"""The two evaluators against hand-computed values, and inside a real MONAI SupervisedEvaluator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from sklearn.metrics import f1_score, precision_score

from s4mi_monai.io import to_json_safe
from s4mi_monai.metrics import (
    SEGMENTATION_SCALAR_NAMES,
    ClassificationMetric,
    SegmentationMetric,
    classification_metrics,
    classification_scalar_names,
    hungarian_match,
    matched_segmentation_metrics,
    segmentation_metrics,
)

NAMES = ["a", "b", "c"]

# 4 samples, class "c" absent from the targets but predicted once (sample 2).
# argmax predictions: a, b, c, a; targets: a, b, b, a.
PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
TARGETS = np.array([0, 1, 1, 0])


def scalar_keys(result: dict) -> set[str]:
    return {key for key, value in result.items() if isinstance(value, (int, float))}


# ---------------------------------------------------------------------------------------------
# classification


def test_multiclass_perfect_predictions_score_one():
    result = classification_metrics(np.eye(3)[[0, 1, 2, 1]], np.array([0, 1, 2, 1]), NAMES)
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro", "auc_macro"):
        assert result[key] == 1.0, key
    assert result["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert result["support_per_class"] == {"a": 1, "b": 2, "c": 1}
    assert result["auc_classes_undefined"] == []


def test_multiclass_partial_predictions_hand_computed():
    result = classification_metrics(PROBABILITIES, TARGETS, NAMES)
    assert result["n_samples"] == 4
    assert result["accuracy"] == 0.75
    # recall a = 2/2, b = 1/2, c undefined (no support) -> macro over a, b
    assert result["recall_per_class"]["a"] == 1.0 and result["recall_per_class"]["b"] == 0.5
    assert math.isnan(result["recall_per_class"]["c"])
    assert result["recall_macro"] == result["balanced_accuracy"] == 0.75
    assert result["recall_classes_undefined"] == ["c"]
    # c was predicted once without support: precision 0 and F1 0 are defined (a false positive)
    assert result["precision_per_class"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert result["f1_per_class"] == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 0.0})
    assert result["f1_macro"] == pytest.approx(5 / 9)
    assert result["f1_micro"] == 0.75
    # AUC b: positives (0.6, 0.3) vs negatives (0.2, 0.4): 3 of 4 pairs ordered -> 0.75
    assert result["auc_per_class"]["a"] == 1.0 and result["auc_per_class"]["b"] == 0.75
    assert math.isnan(result["auc_per_class"]["c"])
    assert result["auc_classes_undefined"] == ["c"]
    assert result["auc_macro"] == pytest.approx(0.875)
    assert result["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    predictions = PROBABILITIES.argmax(axis=1)
    assert result["f1_macro"] == pytest.approx(f1_score(TARGETS, predictions, labels=[0, 1, 2], average="macro", zero_division=0))
    assert result["precision_macro"] == pytest.approx(
        precision_score(TARGETS, predictions, labels=[0, 1, 2], average="macro", zero_division=0)
    )


def test_class_absent_from_targets_and_predictions_is_undefined_not_zero():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    result = classification_metrics(probabilities, np.array([0, 1, 1]), NAMES)
    # a: tp1 fp1 fn0 -> F1 2/3, precision 1/2; b: tp1 fp0 fn1 -> F1 2/3, precision 1; c: nothing
    assert math.isnan(result["f1_per_class"]["c"]) and math.isnan(result["precision_per_class"]["c"])
    assert result["f1_classes_undefined"] == ["c"] and result["precision_classes_undefined"] == ["c"]
    assert result["f1_macro"] == pytest.approx(2 / 3)
    assert result["precision_macro"] == pytest.approx(0.75)


def test_reference_micro_recall_hand_computed():
    # p > 0.5 picks a (true a), b (true b), c (true b), nothing (0.5 is not > 0.5; true a):
    # tp 2, fp 1, fn 2 -> recall 2/4, micro F1 4/7
    result = classification_metrics(PROBABILITIES, TARGETS, NAMES)
    assert result["reference_micro_recall_as_f1"] == 0.5
    assert result["reference_micro_f1"] == pytest.approx(4 / 7)


def test_multilabel_hand_computed():
    probabilities = np.array([[0.9, 0.2, 0.6], [0.1, 0.7, 0.4], [0.3, 0.3, 0.8]])
    targets = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 0]])
    result = classification_metrics(probabilities, targets, ["x", "y", "z"], multi_label=True)
    # predicted sets: {x, z}, {y}, {z}; per label tp/fp/fn: x 1/0/0, y 0/1/0, z 1/1/1
    assert result["subset_accuracy"] == pytest.approx(1 / 3)
    assert result["f1_per_label"] == pytest.approx({"x": 1.0, "y": 0.0, "z": 0.5})
    assert result["f1_macro"] == 0.5
    assert result["f1_micro"] == pytest.approx(4 / 7)
    assert result["recall_per_label"]["x"] == 1.0 and result["recall_per_label"]["z"] == 0.5
    assert result["recall_labels_undefined"] == ["y"] and result["recall_macro"] == 0.75
    # AUC z: positives (0.6, 0.4) both below the negative 0.8 -> 0
    assert result["auc_per_label"]["x"] == 1.0 and result["auc_per_label"]["z"] == 0.0
    assert result["auc_labels_undefined"] == ["y"] and result["auc_macro"] == 0.5
    assert result["reference_micro_recall_as_f1"] == pytest.approx(2 / 3)
    # threshold 0.35 predicts z for all three samples: tp 2, fp 1, fn 0 -> F1 4/5; the reference keeps 0.5
    lower = classification_metrics(probabilities, targets, ["x", "y", "z"], multi_label=True, threshold=0.35)
    assert lower["f1_per_label"]["z"] == pytest.approx(4 / 5)
    assert lower["reference_micro_recall_as_f1"] == result["reference_micro_recall_as_f1"]


def test_isic2017_challenge_score_is_mean_of_two_aucs():
    names = ["nevus", "melanoma", "seborrheic_keratosis"]
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.4, 0.1, 0.5]])
    targets = np.array([0, 1, 1, 2, 0])
    result = classification_metrics(probabilities, targets, names, challenge="isic2017")
    # melanoma: positives (0.7, 0.4) vs negatives (0.3, 0.2, 0.1): all 6 pairs ordered -> 1.0
    # keratosis: positive 0.6 vs negatives (0.1, 0.1, 0.1, 0.5) -> 1.0; make it imperfect below
    assert result["isic2017_challenge_score"] == 1.0
    probabilities[4] = [0.2, 0.1, 0.7]  # a nevus now outranks the keratosis: AUC 3/4
    result = classification_metrics(probabilities, targets, names, challenge="isic2017")
    assert result["auc_per_class"]["seborrheic_keratosis"] == 0.75
    assert result["isic2017_challenge_score"] == pytest.approx(0.875)
    with pytest.raises(ValueError, match="melanoma"):
        classification_metrics(probabilities, targets, ["x", "y", "z"], challenge="isic2017")


@pytest.mark.parametrize(
    ("probabilities", "targets", "kwargs", "message"),
    [
        (PROBABILITIES[:, :2], TARGETS, {}, "shape"),
        (np.where(PROBABILITIES > 0.6, np.nan, PROBABILITIES), TARGETS, {}, "NaN"),
        (PROBABILITIES * 3 - 1, TARGETS, {}, r"\[0, 1\]"),
        (PROBABILITIES * 0.5, TARGETS, {}, "sum to 1"),
        (PROBABILITIES, np.array([0, 1, 3, 0]), {}, "targets must lie"),
        (PROBABILITIES, np.array([0, 1, 1.5, 0]), {}, "integer"),
        (PROBABILITIES, TARGETS[:3], {}, "shape"),
        (PROBABILITIES, np.eye(3)[TARGETS] * 2, {"multi_label": True}, "0/1"),
        (PROBABILITIES, TARGETS, {"challenge": "isic2018"}, "unknown challenge"),
    ],
)
def test_invalid_classification_inputs_raise(probabilities, targets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(probabilities, targets, NAMES, **kwargs)


def test_scalar_names_match_the_results():
    assert scalar_keys(classification_metrics(PROBABILITIES, TARGETS, NAMES)) == set(classification_scalar_names())
    multi_hot = np.eye(3)[TARGETS]
    multilabel = classification_metrics(PROBABILITIES, multi_hot, NAMES, multi_label=True)
    assert scalar_keys(multilabel) == set(classification_scalar_names(multi_label=True))


def test_to_json_safe_turns_nan_into_null():
    result = to_json_safe(classification_metrics(PROBABILITIES, TARGETS, NAMES))
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["auc_per_class"]["c"] is None
    assert to_json_safe({"x": np.float32(0.5), "y": (np.int64(2), float("inf"))}) == {"x": 0.5, "y": [2, None]}


# ---------------------------------------------------------------------------------------------
# segmentation

# image A: 4x4, GT 2x2 block (4 px), prediction 4 px overlapping 2 -> tp 2, fp 2, fn 2
GT_A = np.zeros((4, 4), dtype=np.int64)
GT_A[:2, :2] = 1
PRED_A = np.zeros((4, 4), dtype=np.int64)
PRED_A[:2, 1:3] = 1
# image B: 3x5 (another size), GT 2 px, prediction 3 px covering them -> tp 2, fp 1, fn 0
GT_B = np.zeros((3, 5), dtype=np.int64)
GT_B[0, :2] = 1
PRED_B = np.zeros((3, 5), dtype=np.int64)
PRED_B[0, :3] = 1
EMPTY = np.zeros((2, 2), dtype=np.int64)
ONE_PIXEL = np.array([[1, 0], [0, 0]])


def test_perfect_and_disjoint_predictions():
    perfect = segmentation_metrics([GT_A, GT_B], [GT_A, GT_B])
    assert perfect["iou_pooled"] == perfect["iou_per_image_mean"] == perfect["dice_pooled"] == 1.0
    assert perfect["iou_per_image_std"] == 0.0
    disjoint = segmentation_metrics([1 - GT_A], [GT_A])
    assert disjoint["iou_pooled"] == disjoint["dice_per_image_mean"] == 0.0


def test_pooled_vs_per_image_hand_computed():
    result = segmentation_metrics([PRED_A, PRED_B], [GT_A, GT_B])
    # IoU A = 2/6, B = 2/3; Dice A = 4/8, B = 4/5; pooled tp 4, fp 3, fn 2
    assert result["iou_per_image_mean"] == pytest.approx(0.5)
    assert result["iou_per_image_std"] == pytest.approx(1 / 6)
    assert result["dice_per_image_mean"] == pytest.approx(0.65)
    assert result["dice_per_image_std"] == pytest.approx(0.15)
    assert result["iou_pooled"] == pytest.approx(4 / 9)
    assert result["dice_pooled"] == pytest.approx(8 / 13)
    assert result["n_images"] == result["n_scored_images"] == 2
    assert result["n_empty_gt"] == 0 and math.isnan(result["empty_gt_correct_rate"])
    assert result["per_class"]["1"]["iou_pooled"] == result["iou_pooled"]


def test_empty_ground_truth_images_are_reported_not_scored_zero():
    predictions, targets = [PRED_A, PRED_B, EMPTY, ONE_PIXEL], [GT_A, GT_B, EMPTY, EMPTY]
    result = segmentation_metrics(predictions, targets)
    assert result["n_images"] == 4 and result["n_scored_images"] == 2
    assert result["n_empty_gt"] == 2
    assert result["empty_gt_correct_rate"] == 0.5  # the empty prediction is right, the 1-pixel one wrong
    assert result["iou_per_image_mean"] == pytest.approx(0.5)  # unchanged by the empty-GT images
    assert result["iou_pooled"] == pytest.approx(4 / 10)  # the stray pixel is a pooled false positive
    # the cross-teaching reference: (1/3 + 2/3) / 4 images
    assert result["reference_iou_mean_over_all_images"] == pytest.approx(0.25)

    scored = segmentation_metrics(predictions, targets, "score")
    assert scored["n_scored_images"] == 4
    assert scored["iou_per_image_mean"] == pytest.approx((1 / 3 + 2 / 3 + 1 + 0) / 4)
    assert scored["dice_per_image_mean"] == pytest.approx((0.5 + 0.8 + 1 + 0) / 4)


@pytest.mark.parametrize(("prediction", "correct_rate"), [(EMPTY, 1.0), (ONE_PIXEL, 0.0)])
def test_only_empty_ground_truth(prediction, correct_rate):
    result = segmentation_metrics([prediction], [EMPTY])
    assert result["n_empty_gt"] == 1 and result["n_scored_images"] == 0
    assert result["empty_gt_correct_rate"] == correct_rate
    assert math.isnan(result["iou_per_image_mean"]) and math.isnan(result["dice_per_image_std"])
    assert result["reference_iou_mean_over_all_images"] == 0.0  # the reference's 0 / 1 image
    assert math.isnan(result["iou_pooled"]) == (correct_rate == 1.0)


def test_input_forms_tensors_one_hot_and_255_masks():
    one_hot_a = torch.as_tensor(np.stack([1 - PRED_A, PRED_A])).float() * 0.9  # (2, H, W) probabilities
    channel_first_b = torch.as_tensor(PRED_B)[None]  # (1, H, W) label map
    result = segmentation_metrics([one_hot_a, channel_first_b], [GT_A[None] * 255, torch.as_tensor(GT_B)])
    assert result["iou_pooled"] == pytest.approx(4 / 9)


@pytest.mark.parametrize(
    ("predictions", "targets", "message"),
    [
        ([PRED_A, PRED_B], [GT_A, GT_A], "at index 1 differ in shape"),
        ([PRED_A * 0.7], [GT_A], "non-integer"),
        ([PRED_A], [GT_A, GT_B], "2 targets"),
        ([-PRED_A], [GT_A], "outside"),
    ],
)
def test_invalid_segmentation_inputs_raise(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        segmentation_metrics(predictions, targets)


def test_multiclass_segmentation_reports_each_foreground_class():
    target = np.array([[0, 1, 1], [2, 2, 0]])
    prediction = np.array([[0, 1, 2], [2, 2, 2]])
    result = segmentation_metrics([prediction], [target], num_classes=3)
    # class 1: tp 1, fp 0, fn 1 -> 1/2; class 2: tp 2, fp 2, fn 0 -> 2/4
    assert result["per_class"]["1"]["iou_pooled"] == 0.5 and result["per_class"]["2"]["iou_pooled"] == 0.5
    assert result["per_class"]["2"]["dice_pooled"] == pytest.approx(4 / 6)
    assert result["dice_pooled"] == pytest.approx((2 / 3 + 4 / 6) / 2)
    with pytest.raises(ValueError, match="outside"):
        segmentation_metrics([prediction + 1], [target], num_classes=3)


def test_hungarian_matching_recovers_swapped_clusters():
    clusters = [1 - GT_A, 1 - GT_B]  # cluster 0 = foreground, cluster 1 = background
    assert hungarian_match(clusters, [GT_A, GT_B], n_clusters=2, n_classes=2) == {0: 1, 1: 0}
    result = matched_segmentation_metrics(clusters, [GT_A, GT_B], n_clusters=2)
    assert result["iou_pooled"] == result["iou_per_image_mean"] == 1.0
    assert result["pixel_accuracy"] == result["miou_all_classes"] == 1.0
    assert result["cluster_to_class"] == {"0": 1, "1": 0}


def test_matched_metrics_with_an_unmatched_cluster_and_ignored_labels():
    target = np.array([[0, 0, 255], [1, 1, 1]])  # 255 is outside [0, 2): ignored
    clusters = np.array([[0, 2, 0], [1, 1, 2]])
    result = matched_segmentation_metrics([clusters], [target], n_clusters=3)
    # H[class, cluster] = [[1, 0, 1], [0, 2, 1]] -> 0->0, 1->1, cluster 2 unmatched
    assert result["cluster_to_class"] == {"0": 0, "1": 1, "2": -1}
    # background: tp 1, fp 0, fn 1 -> 1/2; foreground: tp 2, fp 0, fn 1 -> 2/3
    assert result["iou_all_classes"] == pytest.approx({"0": 0.5, "1": 2 / 3})
    assert result["miou_all_classes"] == pytest.approx(7 / 12)
    assert result["iou_pooled"] == pytest.approx(2 / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)


def test_segmentation_scalar_names_match_the_results():
    assert scalar_keys(segmentation_metrics([PRED_A], [GT_A])) == set(SEGMENTATION_SCALAR_NAMES)


# ---------------------------------------------------------------------------------------------
# ignite metrics inside a MONAI SupervisedEvaluator (identity network: pred = image)


def run_evaluator(items: list[dict], metric, decollate: bool = True, batch_size: int = 2) -> SupervisedEvaluator:
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=batch_size),
        network=torch.nn.Identity(),
        key_val_metric={"score": metric},
        decollate=decollate,
    )
    evaluator.run()
    return evaluator


@pytest.mark.parametrize("decollate", [True, False])
def test_classification_metric_in_supervised_evaluator(tmp_path, decollate):
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), size=7).astype(np.float32)
    targets = np.array([0, 1, 2, 1, 0, 2, 1])
    items = [{"image": torch.as_tensor(p), "label": torch.as_tensor(t)} for p, t in zip(probabilities, targets)]
    metric = ClassificationMetric(
        NAMES,
        metric="auc_macro",
        save_path=tmp_path / "metrics.json",
        scalars_prefix="val_",
        output_transform=from_engine(["pred", "label"]),
    )
    evaluator = run_evaluator(items, metric, decollate=decollate)
    expected = classification_metrics(probabilities, targets, NAMES)
    assert evaluator.state.metrics["score"] == pytest.approx(expected["auc_macro"])
    assert to_json_safe(evaluator.state.s4mi_metrics["score"]) == to_json_safe(expected)
    assert evaluator.state.metrics["val_f1_macro"] == pytest.approx(expected["f1_macro"])
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == pytest.approx(expected["accuracy"])
    assert evaluator.state.best_metric == pytest.approx(expected["auc_macro"])


def test_classification_metric_accepts_one_hot_labels():
    metric = ClassificationMetric(NAMES)
    metric.update((torch.as_tensor(PROBABILITIES), torch.as_tensor(np.eye(3)[TARGETS])))
    assert metric.compute() == pytest.approx(5 / 9)
    assert metric.last_result["accuracy"] == 0.75
    with pytest.raises(ValueError, match="not a scalar"):
        ClassificationMetric(NAMES, metric="auc_per_class")


@pytest.mark.parametrize("decollate", [True, False])
def test_segmentation_metric_in_supervised_evaluator(decollate):
    targets = [GT_A, np.zeros_like(GT_A), GT_A.T, np.ones_like(GT_A)]
    predictions = [PRED_A, GT_A, GT_A.T, GT_A]
    items = [
        {"image": torch.as_tensor(np.stack([1 - p, p])).float(), "label": torch.as_tensor(t)[None]} for p, t in zip(predictions, targets)
    ]
    metric = SegmentationMetric(metric="dice_per_image_mean", output_transform=from_engine(["pred", "label"]))
    evaluator = run_evaluator(items, metric, decollate=decollate)
    expected = segmentation_metrics(predictions, targets)
    assert evaluator.state.metrics["score"] == pytest.approx(expected["dice_per_image_mean"])
    assert to_json_safe(evaluator.state.s4mi_metrics["score"]) == to_json_safe(expected)
    assert metric.last_result["n_empty_gt"] == 1 and metric.last_result["empty_gt_correct_rate"] == 0.0


def test_one_vs_rest_auc_equals_sklearn_with_and_without_ties():
    from sklearn.metrics import roc_auc_score

    from s4mi_monai.metrics.classification import _one_vs_rest_auc

    rng = np.random.default_rng(5)
    for scores in (rng.random(300), np.round(rng.random(300), 1), np.repeat([0.2, 0.5], 150)):
        positive = rng.random(300) < 0.3
        assert _one_vs_rest_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert math.isnan(_one_vs_rest_auc(np.ones(4, dtype=bool), rng.random(4)))
    assert _one_vs_rest_auc(np.array([False, True]), np.array([0.1, 0.9])) == 1.0
