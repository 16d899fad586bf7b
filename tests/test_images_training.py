"""Folds of an image cache: streamed, not copied; scaled per channel on the training rows;
augmented training batches paired across strategies, fused or not; a CNN end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from kfold_clr.config import load_config
from kfold_clr.data.images.streaming import PixelRows
from kfold_clr.planning.preflight import prepare
from kfold_clr.training.fold_plans import batch_order, fold_spec, plan_folds
from kfold_clr.training.trainer import prepare_fold, training_batches

AUGMENT = {"flip": "horizontal_and_vertical", "rotation": 0.1, "zoom": 0.1, "translation": 0.1, "contrast": 0.2}


@pytest.fixture(autouse=True)
def _image_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path_factory.mktemp("cache")))


def make_folder(root, *, per_class=20):
    """Two classes of 8x8 images, the second brighter, and a table of 5 subjects."""
    rng = np.random.default_rng(0)
    rows = []
    for label in range(2):
        for i in range(per_class):
            path = root / f"c{label}" / f"c{label}_{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 120, (8, 8, 3)) + 90 * label + np.array([0, 10, 30])
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            name = f"c{label}_{i:02d}.png"  # a file name unique under the folder, or a relative path
            rows.append({"file": name if label else f"c0/{name}", "subject": f"s{i % 5}"})
    pd.DataFrame(rows).to_csv(root.parent / "subjects.csv", index=False)
    return root


def experiment(tmp_path, *, augment=None, fused=False, strategies=None, range_test=None, splitter="stratified",
               **data):
    folder = tmp_path / "imgs"
    if not folder.exists():
        make_folder(folder)
    settings = {"source": "images", "path": "imgs", "image_size": [8, 8], **data}
    if augment:
        settings["augment"] = augment
    return {"name": "imgs", "seed": 3, "data": settings, "model": {"kind": "cnn", "filters": [4], "hidden": [8]},
            "training": {"epochs": 2, "batch_size": 6, "train_scores": True},
            "cv": {"splitter": splitter, "n_splits": 2},
            "strategies": strategies or {"fast": {"schedule": "constant", "lr": 0.05},
                                         "slow": {"schedule": "constant", "lr": 0.01}},
            "execution": {"fused_folds": fused}, "output": {"dir": str(tmp_path / f"out_{fused}")},
            "range_test": range_test or {}}


def prepared(tmp_path, **changes):
    config = load_config(experiment(tmp_path, **changes), base_dir=tmp_path)
    config, dataset, splits, _ = prepare(config)
    return config, dataset, splits


def test_a_fold_reads_the_cache_and_copies_no_pixels(tmp_path):
    config, dataset, splits = prepared(tmp_path)
    x_train, y_train, x_val, y_val = prepare_fold(dataset, splits[0], config.data)
    assert isinstance(dataset.x, np.memmap) and dataset.x.dtype == np.uint8
    for rows, split_rows in ((x_train, splits[0].train), (x_val, splits[0].val)):
        assert isinstance(rows, PixelRows) and rows.pixels is dataset.x  # the memmap itself, not a copy
        assert rows.shape == (len(split_rows), 8, 8, 3)
    np.testing.assert_array_equal(y_train, dataset.y[splits[0].train])


@pytest.mark.parametrize("scale", ["standard", "minmax", "none"])
def test_scaling_is_per_channel_and_fitted_on_the_training_rows(tmp_path, scale):
    config, dataset, splits = prepared(tmp_path, scale=scale)
    split = splits[1]
    x_train, _, x_val, _ = prepare_fold(dataset, split, config.data)
    train = np.asarray(dataset.x[split.train], dtype=np.float64)
    if scale == "standard":
        offset, factor = train.mean(axis=(0, 1, 2)), 1 / train.std(axis=(0, 1, 2))
    elif scale == "minmax":
        offset = train.min(axis=(0, 1, 2))
        factor = 1 / (train.max(axis=(0, 1, 2)) - offset)
    else:
        offset, factor = 0.0, 1 / 255
    for rows, split_rows in ((x_train, split.train), (x_val, split.val)):
        expected = (np.asarray(dataset.x[split_rows], dtype=np.float64) - offset) * factor
        np.testing.assert_allclose(np.asarray(rows), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows[[3, 1]], expected[[3, 1]], rtol=1e-5, atol=1e-5)
    if scale == "standard":
        scaled = np.asarray(x_train, dtype=np.float64)
        np.testing.assert_allclose(scaled.mean(axis=(0, 1, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(scaled.std(axis=(0, 1, 2)), 1, atol=1e-4)


def batches_of(spec, fold_data, batch_size, epochs):
    x_train, y_train = fold_data[:2]
    order = batch_order(spec.batch_seed, len(x_train), epochs=epochs)
    return [(x.numpy(), y.numpy()) for x, y in training_batches(x_train, y_train, batch_size, order=order,
                                                                  seed=spec.batch_seed)]


def test_every_strategy_sees_the_same_augmented_batches(tmp_path):
    config, dataset, splits = prepared(tmp_path, augment=AUGMENT)
    specs = {name: fold_spec(config, plan_folds(name, strategy, splits[:1], seed=config.seed, epochs=2,
                                                batch_size=6)[0])
             for name, strategy in config.strategies.items()}
    fold_data = prepare_fold(dataset, splits[0], config.data)
    fast, slow = (batches_of(specs[name], fold_data, 6, 2) for name in ("fast", "slow"))
    assert len(fast) == len(slow) == 2 * 4  # 20 rows in batches of 6, two epochs
    for (x_a, y_a), (x_b, y_b) in zip(fast, slow):
        np.testing.assert_array_equal(x_a, x_b)
        np.testing.assert_array_equal(y_a, y_b)
    plain = prepare_fold(dataset, splits[0], load_config(experiment(tmp_path), base_dir=tmp_path).data)
    order = batch_order(specs["fast"].batch_seed, 20, epochs=2)
    unaugmented = plain[0].take(order[0][:6])
    assert not np.allclose(fast[0][0], unaugmented)  # augmented ...
    assert fast[0][0].shape == unaugmented.shape
    np.testing.assert_allclose(fold_data[0].take(order[0][:6], key=(specs["fast"].batch_seed, 0, 0)), fast[0][0])
    other_epoch = fold_data[0].take(order[0][:6], key=(specs["fast"].batch_seed, 1, 0))
    assert not np.allclose(other_epoch, fast[0][0])  # drawn anew each epoch
    np.testing.assert_array_equal(np.asarray(fold_data[2]), np.asarray(plain[2]))  # ... validation rows never


def test_fused_branches_read_the_batches_the_sequential_trainer_reads(tmp_path):
    from kfold_clr.training.fused.layout import EpochBatches, FoldLayout
    from kfold_clr.training.trainer import PreparedFolds

    config, dataset, splits = prepared(tmp_path, augment=AUGMENT)
    specs = [fold_spec(config, plan) for name, strategy in config.strategies.items()
             for plan in plan_folds(name, strategy, splits, seed=config.seed, epochs=2, batch_size=6)]
    layout = FoldLayout(specs, PreparedFolds(dataset, splits, config.data))
    assert layout.train.values is None and all(isinstance(rows, PixelRows) for rows in layout.train.lazy.values())
    orders = {k: batch_order(seed, layout.train.sizes[k], epochs=2) for k, seed in enumerate(layout.batch_seeds)}
    steps = np.array([spec.plan.steps_per_epoch for spec in specs])
    for b, spec in enumerate(specs):
        sequential = batches_of(spec, prepare_fold(dataset, spec.plan.split, config.data), 6, 2)
        for epoch in range(2):
            batches = EpochBatches(layout, orders, epoch, np.ones(len(specs), bool), steps, 6)
            x, y, index, active, _ = layout.train_inputs(batches, *batches.full_steps(0, batches.n_full))
            for step in range(batches.n_full):
                np.testing.assert_allclose(x[index[step, b]], sequential[epoch * 4 + step][0], atol=1e-5)
                np.testing.assert_array_equal(y[index[step, b]], sequential[epoch * 4 + step][1])
            (x, y, index, active, _), = [layout.train_inputs(batches, *call) for call in batches.partial_steps()]
            np.testing.assert_allclose(x[index[0, b]], sequential[epoch * 4 + 3][0], atol=1e-5)


def run(tmp_path, **changes):
    from kfold_clr.cli.main import main

    path = tmp_path / f"exp_{changes.get('fused')}.yaml"
    path.write_text(yaml.safe_dump(experiment(tmp_path, **changes)))
    assert main(["run", str(path), "--fresh", "--quiet"]) == 0
    return pd.read_csv(tmp_path / f"out_{changes.get('fused')}" / "folds.csv").sort_values(["strategy", "fold"])


@pytest.mark.slow
def test_a_cnn_on_an_image_folder_fused_equals_sequential_with_augmentation(tmp_path):
    strategies = {"fast": {"schedule": "constant", "lr": 0.05},
                  "clr": {"schedule": "clr", "bounds": "per_fold_range_test", "step_size_epochs": 1}}
    settings = {"augment": AUGMENT, "strategies": strategies, "table": "subjects.csv", "groups": "subject",
                "splitter": "group",
                "range_test": {"iterations": 12, "min_lr": 1e-3, "max_lr": 1.0, "method": "min_div"}}
    make_folder(tmp_path / "imgs")
    sequential = run(tmp_path, fused=False, **settings)
    fused = run(tmp_path, fused=True, **settings)
    assert (sequential["status"] == "ok").all() and len(sequential) == 4 and fused["fused"].all()
    splits = json.loads((tmp_path / "out_False" / "splits.json").read_text())
    assert splits["splitter"] == "group"  # the table's subjects kept apart
    columns = ["train_loss", "val_loss", "val_accuracy", "base_lr", "max_lr"]
    np.testing.assert_allclose(fused[columns].to_numpy(float), sequential[columns].to_numpy(float),
                               rtol=1e-5, atol=1e-5)
    # augmentation changed training (checked on the strategy without a range test, which is cheaper)
    plain = run(tmp_path, fused=False, **{**settings, "augment": None, "strategies": {"fast": strategies["fast"]}})
    augmented = sequential[sequential["strategy"] == "fast"]
    assert len(plain) == len(augmented) == 2 and not np.allclose(plain["train_loss"], augmented["train_loss"])


def test_the_range_test_reads_image_rows_as_it_reads_arrays(tmp_path):
    from kfold_clr.range_test import lr_range_test
    from kfold_clr.training.models import compile_model, make_optimizer
    from kfold_clr.training.trainer import initial_model

    config, dataset, splits = prepared(tmp_path)
    x_train, y_train, _, _ = prepare_fold(dataset, splits[0], config.data)
    plan = plan_folds("fast", config.strategies["fast"], splits[:1], seed=0, epochs=1, batch_size=6)[0]
    curves = []
    for x in (x_train, np.asarray(x_train)):
        model = initial_model(config, dataset, plan, (8, 8, 3))
        compile_model(model, make_optimizer(config.training.optimizer, 1e-3), loss=config.training.loss,
                      metrics=config.training.metrics)
        curves.append(lr_range_test(model, x, y_train, iterations=8, batch_size=6, seed=1).history)
    np.testing.assert_allclose(curves[0]["loss"], curves[1]["loss"], rtol=1e-6)


@pytest.mark.parametrize("scale", ["standard", "minmax", "none"])
@pytest.mark.parametrize("augment", [None, AUGMENT])
def test_streamed_batches_are_the_rows_own_samples_bit_for_bit(tmp_path, scale, augment):
    """`row_batches` scales in the graph what `PixelRows.take` scales in NumPy: the same values."""
    from kfold_clr.data.images.streaming import row_batches

    config, dataset, splits = prepared(tmp_path, augment=augment, scale=scale)
    x_train, y_train, x_val, y_val = prepare_fold(dataset, splits[0], config.data)
    for rows, targets in ((x_train, y_train), (x_val, y_val)):
        plan = [(np.arange(start, min(start + 7, len(rows)))[::-1], (5, 1, start)) for start in range(0, len(rows), 7)]
        plan.append((np.arange(3), None))  # an unaugmented batch of rows that augment
        streamed = list(row_batches(rows, targets, lambda plan=plan: iter(plan)))
        assert len(streamed) == len(plan)
        for (positions, key), (x, y) in zip(plan, streamed):
            want = rows.take(positions, key=key)
            assert x.dtype.name == "float32" and x.shape == want.shape
            np.testing.assert_array_equal(x.numpy(), want)
            np.testing.assert_array_equal(y.numpy(), targets[positions])
