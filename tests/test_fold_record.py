"""One typed fold record (`kfold_clr.training.fold_record`): every kind of row, its columns and their order."""

import copy
import math
import pathlib
import types

import numpy as np
import pytest

from kfold_clr.training.fold_record import FoldRow, Snapshots, Tuning, failed_record, trained_record, update_row

COMMON = ["strategy", "repeat", "fold", "seed", "status", "error", "n_train", "n_val", "epochs", "iterations",
          "fit_seconds", "job_seconds", "job_folds", "initial_step"]


def _plan(carry_from=None, steps_per_epoch=2):
    split = types.SimpleNamespace(repeat=1, fold=2, train=np.arange(6), val=np.arange(6, 9))
    return types.SimpleNamespace(strategy="clr", split=split, seed=7, initial_step=4, carry_from=carry_from,
                                 steps_per_epoch=steps_per_epoch)


def _spec(plan):
    return types.SimpleNamespace(plan=plan, lr_info={"base_lr": 0.01, "max_lr": 0.1})


def _trained(diverged_epoch=None, **scores):
    return trained_record(_spec(_plan()), iterations=5, lrs=np.array([0.01, 0.02, 0.03, 0.04, 0.05]),
                          fit_seconds=1.23456, diverged_epoch=diverged_epoch,
                          train_scores=None if diverged_epoch else {"loss": 0.5, "accuracy": 0.8},
                          val_scores=None if diverged_epoch else {"loss": 0.6, "accuracy": 0.7},
                          epoch_logs=[{"loss": 1.0}, {"loss": 0.5}, {"loss": 0.4}], **scores)


def test_a_trained_row_has_the_folds_csv_columns_in_order():
    record = _trained(job_seconds=3.0, job_folds=3)
    row = record["row"]
    assert list(row) == COMMON + ["base_lr", "max_lr", "final_lr", "diverged", "diverged_epoch", "diverged_lr",
                                  "leaky", "optimistic", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    assert (row["status"], row["fit_seconds"], row["job_seconds"], row["job_folds"]) == ("ok", 1.2346, 3.0, 3)
    assert row["final_lr"] == 0.05 and row["diverged_lr"] is None and row["diverged"] is False
    # the LR in force at each epoch's end: 2 updates an epoch, the third epoch cut short at the fifth
    assert [h["lr"] for h in record["history"]] == [0.02, 0.04, 0.05]
    assert [p["global_iteration"] for p in record["lr"]] == [4, 5, 6, 7, 8]


def test_a_diverged_row_keeps_only_a_nan_train_loss_and_the_lr_it_diverged_at():
    row = _trained(diverged_epoch=3)["row"]
    assert row["status"] == "diverged" and row["diverged"] is True and row["diverged_lr"] == 0.05
    assert list(row)[-3:] == ["leaky", "optimistic", "train_loss"] and math.isnan(row["train_loss"])


def test_a_failed_row_has_no_lr_or_divergence_columns_and_carry_columns_follow_the_scores():
    record = failed_record(_plan(carry_from="r1_f1"), "RuntimeError: boom")
    assert list(record["row"]) == COMMON + ["diverged", "leaky", "optimistic"]
    assert record["row"]["leaky"] is True and record["history"] == record["lr"] == []
    update_row(record, carried_from="", restarted_after="r1_f1", leaky=False)
    update_row(record, fused=False)
    row = record["row"]
    assert list(row)[-4:] == ["optimistic", "carried_from", "restarted_after", "fused"]
    assert (row["leaky"], row["restarted_after"], row["error"]) == (False, "r1_f1", "RuntimeError: boom")


def test_snapshot_tuning_and_optimism_columns_come_in_the_order_folds_csv_has_them():
    record = _trained()
    update_row(record, snapshots=Snapshots(2, (8, 12), {"loss": 0.4, "accuracy": 0.9}))
    update_row(record, fused=True)
    tuning = Tuning({"lr": 0.05}, select="inner_cv", points=2, fits=4, failed_fits=0, unscored_points=0,
                    score=0.3, iterations=40, seconds=1.5)
    update_row(record, tuning=tuning, optimistic=True, optimistic_reason="early stopping")
    row = record["row"]
    assert list(row)[row_index(row, "val_accuracy") + 1:] == [
        "n_snapshots", "snapshot_iterations", "snapshot_val_loss", "snapshot_val_accuracy", "fused", "tuned_lr",
        "tune_select", "tune_points", "tune_fits", "tune_failed_fits", "tune_unscored_points", "tune_score",
        "tune_iterations", "tune_seconds", "optimistic_reason"]
    assert row["snapshot_iterations"] == "8 12" and row["optimistic"] is True and row["tuned_lr"] == 0.05
    assert FoldRow.from_dict(row).tuning == tuning and FoldRow.from_dict(row).snapshots.iterations == (8, 12)


def row_index(row, key):
    return list(row).index(key)


@pytest.mark.slow
def test_every_saved_row_of_a_run_reads_back_to_itself_and_rebuilds_the_same_folds_csv(tiny_experiment):
    """Rows of every kind a run saves (fused, snapshots, a carry chain, tuned, optimistic) round-trip
    through FoldRow, and folds.csv rebuilt from the round-tripped rows is the same bytes."""
    from kfold_clr import run_experiment
    from kfold_clr.storage.store import ResultsStore

    experiment = copy.deepcopy(tiny_experiment)
    clr = {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2}
    experiment["strategies"] = {
        "snap": {**clr, "across_folds": "reset", "snapshots": {"keep": 1}},
        "carry": {**clr, "across_folds": "continue", "carry_weights": True},
        "tuned": {"schedule": "step", "lr": [0.01, 0.2], "factor": 0.5, "every_epochs": 1,
                  "tune": {"select": "outer"}},
    }
    experiment["execution"] = {"fused_folds": "auto"}
    out = pathlib.Path(run_experiment(experiment, verbosity=0).directory)
    store = ResultsStore(out)
    records = store.records(list(experiment["strategies"]))
    assert len(records) == 9
    for record in records:
        row = FoldRow.from_dict(record["row"])
        assert list(row.as_dict().items()) == list(record["row"].items()) and row.extra == {}
    columns = set(records[0]["row"]) | {key for record in records for key in record["row"]}
    assert {"n_snapshots", "carried_from", "restarted_after", "fused", "tuned_lr", "optimistic_reason"} <= columns
    written = (out / "folds.csv").read_bytes()
    store.write_tables([{**r, "row": FoldRow.from_dict(r["row"]).as_dict()} for r in records],
                       strategies=list(experiment["strategies"]))
    assert (out / "folds.csv").read_bytes() == written


def test_columns_a_row_does_not_name_are_kept_at_its_end_and_fields_it_lacks_read_as_none():
    row = {**_trained()["row"], "from_a_newer_version": 1}
    rebuilt = FoldRow.from_dict(row).as_dict()
    assert rebuilt == row and list(rebuilt)[-1] == "from_a_newer_version"
    partial = FoldRow.from_dict({"strategy": "s", "status": "diverged"})
    assert (partial.status, partial.seed, partial.n_train, partial.leaky) == ("diverged", None, None, None)


def test_a_row_refuses_an_unknown_status_and_update_row_an_unknown_field():
    with pytest.raises(ValueError, match="status must be one of ok, diverged, failed. Received: 'done'"):
        FoldRow("s", 0, 0, 1, "done", 3, 1, 0, leaky=False)
    with pytest.raises(TypeError):
        update_row(_trained(), not_a_column=1)
