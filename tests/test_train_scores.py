"""`training.train_scores` (scikit-learn's `return_train_score`): false skips scoring the final
weights on the training rows; the `train_<metric>` columns stay, empty, and nothing else changes."""

import copy

import numpy as np
import pandas as pd
import pytest

from helpers import TINY_EXPERIMENT
from kfold_clr.config import load_config
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.storage.provenance import fingerprint
from kfold_clr.training import trainer


def _experiment(tmp_path, name, *, train_scores, fused):
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["training"]["train_scores"] = train_scores
    experiment["execution"] = {"fused_folds": fused}
    experiment["output"] = {"dir": str(tmp_path / name)}
    return experiment


@pytest.mark.parametrize("fused", [False, True])
def test_off_leaves_train_columns_empty_and_every_other_number_as_it_was(tmp_path, monkeypatch, fused):
    scored = run_experiment(_experiment(tmp_path, "on", train_scores=True, fused=fused), verbosity=0)
    calls = []
    real = trainer._final_scores
    monkeypatch.setattr(trainer, "_final_scores", lambda *args: calls.append(len(args[1])) or real(*args))
    skipped = run_experiment(_experiment(tmp_path, "off", train_scores=False, fused=fused), verbosity=0)

    assert calls == []  # no pass over the training rows (the fused path has its own evaluator)
    on, off = (pd.read_csv(r.directory / "folds.csv") for r in (scored, skipped))
    train_columns = [c for c in on.columns if c.startswith("train_") and c not in ("train_iterations",)]
    assert {"train_loss", "train_accuracy"} <= set(train_columns)
    assert set(train_columns) <= set(off.columns)
    assert np.isfinite(on[train_columns].to_numpy(float)).all()
    assert off[train_columns].isna().all().all()
    val_columns = [c for c in on.columns if c.startswith("val_")]
    np.testing.assert_array_equal(on[val_columns].to_numpy(float), off[val_columns].to_numpy(float))
    history_on, history_off = (pd.read_csv(r.directory / "history.csv") for r in (scored, skipped))
    pd.testing.assert_frame_equal(history_on, history_off)

    summary = pd.read_csv(skipped.directory / "summary.csv")
    assert summary["train_mean"].isna().all() and summary["gap"].isna().all()
    assert pd.read_csv(scored.directory / "summary.csv")["train_mean"].notna().all()
    report = (skipped.directory / "report.md").read_text()
    assert "`training.train_scores: false`" in report
    assert "`training.train_scores: false`" not in (scored.directory / "report.md").read_text()


def test_off_by_default_as_in_scikit_learn_and_a_true_value_left_out_of_dumps_as_before(tmp_path):
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    del experiment["training"]["train_scores"]
    default = load_config(experiment)
    assert default.training.train_scores is False
    assert default.training.fingerprint_dump()["train_scores"] is False
    experiment["training"]["train_scores"] = True
    scored = load_config(experiment)
    # Versions that scored every fold wrote no key: their fingerprints hold for `train_scores: true`.
    assert "train_scores" not in scored.training.fingerprint_dump()
    everything_else = {key: value for key, value in scored.training.model_dump(mode="json").items()
                       if key != "train_scores"}
    assert scored.training.fingerprint_dump() == everything_else
    assert fingerprint(scored.training.fingerprint_dump()) != fingerprint(default.training.fingerprint_dump())


@pytest.mark.parametrize("value", [True, False])
def test_every_dump_keeps_the_value_so_workers_and_saved_configs_read_it_back(tmp_path, value):
    from kfold_clr.config import dump_yaml, parse_yaml

    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["training"]["train_scores"] = value
    dumped = load_config(experiment).to_dict()  # what worker processes and config.yaml get
    assert dumped["training"]["train_scores"] is value
    assert load_config(parse_yaml(dump_yaml(dumped))).training.train_scores is value


@pytest.mark.parametrize("saved, scored", [({}, True), ({"train_scores": True}, True),
                                           ({"train_scores": False}, False)])
def test_a_saved_config_without_the_key_was_scored(tmp_path, write_yaml, saved, scored):
    from kfold_clr.config import dump_yaml
    from kfold_clr.report.reading import read_config

    written = load_config(_experiment(tmp_path, "out", train_scores=True, fused=False)).to_dict()
    written["training"] = {**{k: v for k, v in written["training"].items() if k != "train_scores"}, **saved}
    assert read_config(write_yaml(dump_yaml(written), "config.yaml")).training.train_scores is scored


def test_a_run_under_the_default_leaves_the_training_rows_unscored(tmp_path):
    experiment = _experiment(tmp_path, "default", train_scores=True, fused=False)
    del experiment["training"]["train_scores"]
    results = run_experiment(experiment, verbosity=0)
    assert results.folds["train_loss"].isna().all() and results.folds["val_loss"].notna().all()
    assert "train_scores: false" in (results.directory / "config.yaml").read_text()


def test_a_bad_value_names_the_key(tmp_path):
    from kfold_clr.errors import ConfigError

    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["training"]["train_scores"] = "sometimes"
    with pytest.raises(ConfigError, match="train_scores"):
        load_config(experiment)

