import numpy as np
import pandas as pd
import pytest

from kfold_clr.config import DataConfig
from kfold_clr.data.datasets import Dataset, FoldPreprocessor, load_dataset
from kfold_clr.data.splits import make_splits, splits_from_json, splits_to_json
from kfold_clr.errors import DataError


def data_cfg(**kwargs):
    return DataConfig.model_validate(kwargs)


@pytest.mark.parametrize("name, task, n_outputs", [
    ("digits", "classification", 10), ("iris", "classification", 3), ("wine", "classification", 3),
    ("breast_cancer", "classification", 2), ("diabetes", "regression", 1)])
def test_bundled_datasets_load_with_their_task(name, task, n_outputs):
    dataset = load_dataset(data_cfg(source="sklearn", name=name))
    assert dataset.task == task and dataset.n_outputs == n_outputs
    assert dataset.x.dtype == np.float32 and len(dataset.x) == len(dataset.y)


def test_synthetic_regression_params_pass_through():
    dataset = load_dataset(data_cfg(source="synthetic", name="regression",
                                    params={"n_samples": 50, "n_features": 3}), seed=1)
    assert dataset.x.shape == (50, 3) and dataset.task == "regression"


def test_synthetic_bad_params_are_a_data_error():
    with pytest.raises(DataError, match="data.params"):
        load_dataset(data_cfg(source="synthetic", name="classification", params={"n_sample": 5}))


def write_csv(tmp_path, frame, name="data.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_csv_with_string_labels_and_groups(tmp_path):
    frame = pd.DataFrame({"a": range(12), "b": np.linspace(0, 1, 12), "g": list("aabbccddeeff"),
                          "label": ["yes", "no"] * 6})
    path = write_csv(tmp_path, frame)
    dataset = load_dataset(data_cfg(source="csv", path=str(path), target="label", groups="g"))
    assert dataset.class_names == ["no", "yes"] and dataset.x.shape == (12, 2)
    assert list(dataset.groups[:2]) == ["a", "a"]


@pytest.mark.parametrize("frame, cfg, expected", [
    (pd.DataFrame({"a": [1, 2], "y": [0, 1]}), {"target": "label"}, "data.target: column 'label' is not in"),
    (pd.DataFrame({"a": [1, 2], "y": [0, 1]}), {"target": "y", "groups": "g"}, "data.groups: column 'g'"),
    (pd.DataFrame({"a": [1, 2], "y": [0, 1]}), {"target": "y", "features": ["a", "c"]}, "data.features: column 'c'"),
    (pd.DataFrame({"a": [1.0, np.nan, 3.0], "y": [0, 1, 0]}), {"target": "y"}, "contain NaN"),
    (pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0, None, 1]}), {"target": "y"}, "missing target values"),
    (pd.DataFrame({"a": ["1", "x", "3"], "y": [0, 1, 0]}), {"target": "y"}, "column 'a' of data.csv is not numeric"),
    (pd.DataFrame({"a": [1, 2, 3], "y": ["s", "s", "s"]}), {"target": "y"}, "single class"),
    (pd.DataFrame({"y": [0, 1]}), {"target": "y"}, "no feature columns"),
    (pd.DataFrame({"a": [], "y": []}), {"target": "y"}, "has a header but no rows"),
])
def test_bad_csv_gives_clear_data_error(tmp_path, frame, cfg, expected):
    path = write_csv(tmp_path, frame)
    with pytest.raises(DataError, match=expected) as error:
        load_dataset(data_cfg(source="csv", path=str(path), **cfg))
    assert "\n" not in str(error.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(data_cfg(source="csv", path=str(tmp_path / "none.csv"), target="y"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_dataset(data_cfg(source="csv", path=str(tmp_path / "empty.csv"), target="y"))


def test_npz_source_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ok.npz", x=rng.normal(size=(20, 2, 2)), y=np.arange(20) % 2, groups=np.arange(20) // 4)
    dataset = load_dataset(data_cfg(source="npz", path=str(tmp_path / "ok.npz")))
    assert dataset.x.shape == (20, 4) and dataset.groups is not None
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 2)))
    with pytest.raises(DataError, match="has no array 'x'"):
        load_dataset(data_cfg(source="npz", path=str(tmp_path / "bad.npz")))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="is not an .npz archive"):
        load_dataset(data_cfg(source="npz", path=str(tmp_path / "junk.npz")))


def test_preprocessing_is_fitted_on_the_training_split_only():
    rng = np.random.default_rng(0)
    x_train, x_val = rng.normal(0, 1, (50, 3)), rng.normal(100, 5, (10, 3))
    pre = FoldPreprocessor(scale="standard").fit(x_train, np.zeros(50))
    scaled_val = pre.transform(x_val)
    # Had the validation rows been seen, their scaled mean would be near 0, not ~100 sds away.
    assert np.all(scaled_val.mean(axis=0) > 20)
    np.testing.assert_allclose(pre.transform(x_train).mean(axis=0), 0, atol=1e-5)
    minmax = FoldPreprocessor(scale="minmax").fit(x_train, None).transform(x_train)
    assert minmax.min() == pytest.approx(0) and minmax.max() == pytest.approx(1)


def test_regression_target_scaled_with_training_statistics():
    pre = FoldPreprocessor(task="regression").fit(np.zeros((4, 1)), np.array([1.0, 2.0, 3.0, 4.0]))
    _, y = pre.transform(np.zeros((1, 1)), np.array([2.5]))
    assert y[0] == pytest.approx(0.0)


def toy(n=60, classes=3, groups=None):
    rng = np.random.default_rng(1)
    return Dataset(x=rng.normal(size=(n, 2)).astype(np.float32), y=np.arange(n) % classes,
                   groups=groups, task="classification", n_outputs=classes)


def assert_partitions(splits, n, n_repeats):
    for repeat in range(n_repeats):
        folds = [s for s in splits if s.repeat == repeat]
        validated = np.concatenate([s.val for s in folds])
        assert np.array_equal(np.sort(validated), np.arange(n))  # each sample validated exactly once
        for s in folds:
            assert not set(s.train) & set(s.val)
            assert len(s.train) + len(s.val) == n


@pytest.mark.parametrize("splitter", ["kfold", "stratified", "group", "stratified_group"])
def test_split_invariants_for_every_splitter(splitter):
    dataset = toy(groups=np.arange(60) // 3)
    splits = make_splits(dataset, splitter=splitter, n_splits=4, n_repeats=2, seed=0)
    assert len(splits) == 8
    assert_partitions(splits, 60, 2)
    if "group" in splitter:
        for s in splits:
            assert not set(dataset.groups[s.train]) & set(dataset.groups[s.val])
    first, second = splits[0].val, splits[4].val
    assert not np.array_equal(first, second)  # repeats shuffle differently


def test_splits_round_trip_through_json():
    dataset = toy()
    splits = make_splits(dataset, n_splits=3, seed=5)
    again = splits_from_json(splits_to_json(splits, splitter="stratified"), dataset.n_samples)
    for a, b in zip(splits, again):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)


@pytest.mark.parametrize("kwargs, expected", [
    ({"n_splits": 100}, "cv.n_splits: 100 is more than the 60 samples"),
    ({"splitter": "group"}, "needs group labels"),
    ({"n_repeats": 2, "shuffle": False}, "cv.n_repeats: 2 repeats without shuffling"),
])
def test_infeasible_splits(kwargs, expected):
    with pytest.raises(DataError, match=expected):
        make_splits(toy(), **kwargs)


def test_too_few_groups_and_small_classes():
    with pytest.raises(DataError, match="more than the 2 groups"):
        make_splits(toy(groups=np.arange(60) % 2), splitter="group", n_splits=3)
    y_rare = toy()
    y_rare.y = np.array([0] * 58 + [1, 1])
    with pytest.warns(UserWarning, match="smallest class has only 2 samples"):
        make_splits(y_rare, splitter="stratified", n_splits=3)
