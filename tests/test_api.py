"""The notebook API: cross_validate on arrays with a model function and any splitter object,
through the same run (validation, store, resume, statistics) as the command line."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import GroupKFold, TimeSeriesSplit

import kfold_clr
from kfold_clr.data.splits import load_given_splits, save_given_splits
from kfold_clr.errors import ConfigError, DataError, ResultsError

pytestmark = pytest.mark.slow

STRATEGIES = {"constant": {"schedule": "constant", "lr": 0.05},
              "clr": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 3}}


def make_model(input_shape, n_outputs):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(hidden))


@pytest.fixture
def data():
    x, y = make_classification(n_samples=96, n_features=5, n_informative=3, n_classes=3, random_state=1)
    return x, y, np.arange(96) // 8  # 12 groups of 8 rows


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))


def run(x, y, out, **kwargs):
    return kfold_clr.cross_validate(kwargs.pop("model", make_model), x, y,
                                    strategies=kwargs.pop("strategies", STRATEGIES), epochs=2, batch_size=16,
                                    output_dir=out, verbose=0, **kwargs)


def test_a_group_splitter_object_keeps_groups_apart_and_every_strategy_is_paired(data, tmp_path):
    x, y, groups = data
    results = run(x, y, tmp_path / "out", groups=groups, cv=GroupKFold(4))
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert splits["splitter"] == "given" and len(splits["splits"]) == 4
    for split in splits["splits"]:
        val = np.asarray(split["val"])
        assert not set(groups[val]) & set(np.delete(groups, val))  # a group is on one side only
    folds = results.folds
    assert set(folds["strategy"]) == set(STRATEGIES) and (folds["status"] == "ok").all()
    assert folds.groupby("fold")["seed"].nunique().eq(1).all()  # same initial weights for both strategies
    assert results.comparison is not None and "verdict" in results.comparison
    assert "## Verdicts" in results.report()
    assert "<table" in results._repr_html_()
    ax = results.plot("fold_scores", "accuracy")
    assert ax.get_ylabel() == "val_accuracy"


def test_resume_reuses_folds_and_changed_arrays_are_never_mixed_in(data, tmp_path):
    x, y, groups = data
    first = run(x, y, tmp_path / "out", cv=3)
    again = run(x, y, tmp_path / "out", cv=3)  # the same call resumes: nothing is trained again
    pd.testing.assert_series_equal(first.folds["fit_seconds"], again.folds["fit_seconds"])
    changed = x.copy()
    changed[0, 0] += 1.0
    with pytest.raises(ResultsError, match="different config"):
        run(changed, y, tmp_path / "out", cv=3)


def test_a_time_series_splitter_trains_only_on_the_past(data, tmp_path):
    x, y, _ = data
    results = run(x, y, tmp_path / "out", cv=TimeSeriesSplit(3))
    folds = results.folds[results.folds["strategy"] == "constant"].sort_values("fold")
    assert list(folds["n_train"]) == [24, 48, 72] and list(folds["n_val"]) == [24, 24, 24]


def test_a_keras_model_is_cloned_with_fresh_weights_per_fold(data, tmp_path):
    x, y, _ = data
    template = make_model((5,), 3)
    before = [w.copy() for w in template.get_weights()]
    results = run(x, y, tmp_path / "out", model=template, cv=2, strategies={"c": STRATEGIES["constant"]})
    assert (results.folds["status"] == "ok").all()
    for got, want in zip(template.get_weights(), before):  # cloned, never trained in place
        np.testing.assert_array_equal(got, want)
    again = run(x, y, tmp_path / "out2", model=template, cv=2, strategies={"c": STRATEGIES["constant"]})
    np.testing.assert_array_equal(results.folds["val_loss"], again.folds["val_loss"])  # seeded per fold


def test_settings_reach_every_section(data, tmp_path):
    x, y, _ = data
    results = run(x, y, tmp_path / "out", cv=2, name="mine", compare={"rope": 0.05},
                  training={"optimizer": {"name": "adam"}})
    import yaml

    saved = yaml.safe_load((results.directory / "config.yaml").read_text())
    assert saved["name"] == "mine" and saved["compare"]["rope"] == 0.05
    assert saved["training"]["optimizer"]["name"] == "adam" and saved["training"]["epochs"] == 2


def test_bad_arguments_are_one_line_errors(data, tmp_path):
    x, y, _ = data
    with pytest.raises(ConfigError, match="y: 10 samples, but X has 96"):
        run(x, y[:10], tmp_path / "out")
    with pytest.raises(ConfigError, match="must be a number of folds, the YAML.s cv mapping, or a splitter"):
        run(x, y, tmp_path / "out", cv="five")
    with pytest.raises(DataError, match=r"features of the arrays X, y \(96 samples\) contain NaN.*column 2: row 3"):
        run(np.where(np.arange(480).reshape(96, 5) == 17, np.nan, x), y, tmp_path / "out")
    with pytest.raises(ConfigError, match="cannot see a model defined in this notebook"):
        run(x, y, tmp_path / "out", execution={"executor": "processes"})
    with pytest.raises(ConfigError, match="training.epochs: 0 must be >= 1"):
        kfold_clr.cross_validate(make_model, x, y, strategies=STRATEGIES, epochs=0, batch_size=8,
                                 output_dir=tmp_path / "out", verbose=0)
    assert not (tmp_path / "out").exists()


def test_given_splits_files_are_checked(tmp_path):
    path = tmp_path / "splits.npz"
    save_given_splits(path, [(np.arange(5), np.arange(5, 8))])
    assert [(s.train.tolist(), s.val.tolist()) for s in load_given_splits(path, 8)] == [([0, 1, 2, 3, 4], [5, 6, 7])]
    with pytest.raises(DataError, match="holds row 7, but the data has 6 rows"):
        load_given_splits(path, 6)
    save_given_splits(path, [(np.arange(5), np.arange(4, 8))])
    with pytest.raises(DataError, match="split 0 trains on some of its validation rows"):
        load_given_splits(path, 8)
