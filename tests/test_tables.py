"""Result tables from finished runs' metrics.json (s4mi table)."""

from __future__ import annotations

import json

import pytest

from s4mi_monai.cli import S4MI
from s4mi_monai.metrics.tables import metrics_table


@pytest.fixture
def runs(tmp_path):
    supervised = tmp_path / "supervised"
    supervised.mkdir()
    (supervised / "metrics.json").write_text(
        json.dumps(
            {
                "test": {"f1_macro": 0.5, "auc_macro": 0.75, "recall_per_class": {"melanoma": 0.25}},
                "validation": {"metric": "f1_macro", "best": 0.6, "epoch": 3},
            }
        )
    )
    cass = tmp_path / "cass"
    cass.mkdir()
    (cass / "metrics.json").write_text(
        json.dumps(
            {
                "test": {"f1_macro": 0.4},
                "branches": {"cnn": {"test": {"f1_macro": 0.4}}, "vit": {"test": {"f1_macro": 0.2, "auc_macro": 0.5}}},
            }
        )
    )
    return supervised, cass


def test_rows_columns_nested_values_and_branches(runs):
    supervised, cass = runs
    table = metrics_table(
        [f"sup={supervised}", f"cass vit={cass}#vit"],
        ["f1_macro", "auc_macro", "recall_per_class.melanoma", "best_validation"],
    )
    lines = table.splitlines()
    assert lines[0] == "| run | f1_macro | auc_macro | recall_per_class.melanoma | best_validation |"
    assert lines[2] == "| sup | 0.500 | 0.750 | 0.250 | 0.600 (epoch 3) |"
    assert lines[3] == "| cass vit | 0.200 | 0.500 | - | - |"


def test_metrics_file_path_accepted_and_labels_may_hold_equals_signs(runs):
    supervised, _ = runs
    assert "| a | 0.500 |" in metrics_table([f"a={supervised / 'metrics.json'}"], ["f1_macro"])
    assert "| λ = 0 | 0.500 |" in metrics_table([f"λ = 0={supervised}"], ["f1_macro"])


def test_clear_errors(runs, tmp_path):
    supervised, cass = runs
    with pytest.raises(ValueError, match="LABEL=PATH"):
        metrics_table([str(supervised)])
    with pytest.raises(FileNotFoundError, match="has the run finished"):
        metrics_table([f"x={tmp_path / 'missing'}"])
    with pytest.raises(KeyError, match="no branch 'transformer'"):
        metrics_table([f"x={cass}#transformer"])
    with pytest.raises(KeyError, match="no 'validation' metrics"):
        metrics_table([f"x={cass}"], split="validation")


def test_cli_table(runs):
    supervised, _ = runs
    table = S4MI().table(f"sup={supervised}", columns="f1_macro,auc_macro")
    assert table.splitlines()[2] == "| sup | 0.500 | 0.750 | 0.600 (epoch 3) |"
    with pytest.raises(ValueError, match="task"):
        S4MI().table(f"sup={supervised}", task="detection")
