"""Results in a module of its own: a short repr, scores(metric), predictions, ValueError on bad
arguments, and the names a user imports from the top level (issue 26)."""

import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

import kfold_clr
from kfold_clr import results as results_module
from kfold_clr.execution.experiment import load_results as old_path_load_results
from kfold_clr.results import Results, load_results

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "results" / "digits-clr"


@pytest.fixture(scope="module")
def example():
    return load_results(EXAMPLE)


def test_load_results_returns_results_from_every_import_path(example):
    assert kfold_clr.load_results is load_results is old_path_load_results
    assert kfold_clr.Results is Results and isinstance(example, Results)


def test_repr_is_one_short_line(example):
    text = repr(example)
    assert text == f"Results({str(EXAMPLE)!r}: 7 strategies, 105 folds)"
    assert "\n" not in text and len(text) < 200


def test_repr_counts_failed_folds(example, tmp_path):
    folds = example.folds.copy()
    folds.loc[:2, "status"] = "failed"
    assert repr(Results(tmp_path, folds, example.history)).endswith("7 strategies, 105 folds, 3 failed)")


def test_scores_are_the_per_split_numbers_the_comparison_pairs(example):
    scores = example.scores("accuracy")
    strategies = list(dict.fromkeys(example.folds["strategy"]))
    assert list(scores.index) == strategies + ["clr_snapshots[snapshots]"]
    assert scores.columns.names == ["repeat", "fold"] and scores.shape == (8, 15)
    row = example.folds.query("strategy == 'clr_reset' and repeat == 2 and fold == 3").iloc[0]
    assert scores.loc["clr_reset", (2, 3)] == row["val_accuracy"]
    assert scores.loc["clr_snapshots[snapshots]", (2, 3)] == example.folds.query(
        "strategy == 'clr_snapshots' and repeat == 2 and fold == 3").iloc[0]["snapshot_val_accuracy"]
    comparison = example.comparison.set_index(["a", "b", "metric"])
    for a, b in [("clr_reset", "step_decay"), ("clr_snapshots[snapshots]", "clr_snapshots")]:
        mean_diff = (scores.loc[a] - scores.loc[b]).mean()
        assert mean_diff == pytest.approx(comparison.loc[(a, b, "accuracy"), "mean_diff"], abs=5e-6)


def test_scores_default_to_the_primary_metric_and_leave_out_folds_that_did_not_finish(example, tmp_path):
    pd.testing.assert_frame_equal(example.scores(), example.scores("accuracy"))
    folds = example.folds.copy()
    folds.loc[(folds["strategy"] == "step_decay") & (folds["fold"] == 0), "status"] = "diverged"
    scores = Results(tmp_path, folds, example.history, example.summary).scores("loss")
    assert scores.loc["step_decay"].isna().sum() == 3 and scores.drop(index="step_decay").notna().all().all()


def test_a_bad_argument_is_a_value_error_naming_what_is_allowed(example):
    with pytest.raises(ValueError, match=r"Argument `metric` must be one of accuracy, loss. Received: metric='acc'"):
        example.scores("acc")
    with pytest.raises(ValueError, match=r"Argument `kind` must be one of fold_scores, learning_curves, lr. "
                                         r"Received: kind='roc'"):
        example.plot("roc")
    with pytest.raises(ValueError, match="Argument `metric` must be one of"):
        example.plot("fold_scores", "auc")
    with pytest.raises(ValueError) as raised:
        example.scores("acc")
    assert not isinstance(raised.value, kfold_clr.ConfigError)


def test_predictions_are_read_where_the_run_wrote_them(example, tmp_path):
    # predictions.csv is not committed (megabytes): present only where the example was run here
    assert (example.predictions is None) == (not (example.directory / "predictions.csv").exists())
    copy = tmp_path / "digits-clr"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("folds", "range_tests", "plots", ".lock*"))
    table = pd.DataFrame({"strategy": ["clr_reset"] * 2, "repeat": 0, "fold": 0, "row": [4, 9], "y_true": [1, 2],
                          "y_pred": [1, 3]})
    table.to_csv(copy / "predictions.csv", index=False)
    pd.testing.assert_frame_equal(load_results(copy).predictions, table)


def test_schedules_and_the_snapshot_callback_import_from_the_top_level():
    from kfold_clr import CyclicalLearningRate, CyclicalMomentum, LearningRateRecorder, OneCycle, SnapshotCollector  # noqa: F401
    from kfold_clr.training.trainer import SnapshotCollector as where_it_lives

    assert SnapshotCollector is where_it_lives and "SnapshotCollector" in dir(kfold_clr)
    collector = SnapshotCollector(capture_at=[2, 4], keep=1)
    assert collector.keep == 1 and collector.capture_at == frozenset({2, 4})
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        kfold_clr.Nope  # noqa: B018


def test_every_lazy_name_is_also_imported_for_type_checkers():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(kfold_clr))
    checked = next(node for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    imported = {alias.name: node.module for node in checked.body for alias in node.names}
    assert imported == kfold_clr._LAZY
    for name in kfold_clr._LAZY:
        assert getattr(kfold_clr, name) is not None


def test_results_module_does_not_import_the_runner():
    assert "kfold_clr.execution.experiment" not in {value.__name__ for value in vars(results_module).values()
                                          if hasattr(value, "__name__") and isinstance(value, type(np))}
