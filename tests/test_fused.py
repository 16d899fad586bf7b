"""Fused folds: masking, per-branch LR exactness, initial weights, records, refusals."""

import copy

import numpy as np
import pytest

from kfold_clr.config import load_config
from kfold_clr.planning.preflight import prepare
from kfold_clr.training.fold_plans import fold_spec, plan_folds, uses_range_test
from kfold_clr.training.fused import batch_order, fused_support, train_fused
from kfold_clr.training.models import compile_model, make_optimizer
from kfold_clr.training.trainer import initial_model, prepare_fold, train_fold

LINEAR = {
    "name": "linear",
    "seed": 5,
    "data": {"source": "synthetic", "name": "regression",
             "params": {"n_samples": 36, "n_features": 3, "noise": 5.0}},
    "model": {"kind": "mlp", "hidden": []},
    "training": {"epochs": 3, "batch_size": 7, "optimizer": {"name": "sgd", "momentum": 0.9}},
    "cv": {"splitter": "kfold", "n_splits": 2},
    "strategies": {
        "clr_reset": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2},
        "clr_continue": {"schedule": "clr", "base_lr": 0.02, "max_lr": 0.05, "step_size": 3,
                         "policy": "triangular2", "across_folds": "continue"},
        "clr_tested": {"schedule": "clr", "bounds": "per_fold_range_test", "step_size": 2},
    },
}
TESTED_BOUNDS = (0.004, 0.03)


def _setup(experiment):
    """Resolved config, data, one FoldSpec per (strategy, fold) and every fold's prepared data."""
    config, dataset, splits, _ = prepare(experiment)
    plans = [plan for name in config.strategies
             for plan in plan_folds(name, config.strategies[name], splits, seed=config.seed,
                                    epochs=config.training.epochs, batch_size=config.training.batch_size)]
    data = {split.key: prepare_fold(dataset, split, config.data) for split in splits}
    specs = [fold_spec(config, plan, bounds=TESTED_BOUNDS if uses_range_test(config.strategies[plan.strategy])
                       else None) for plan in plans]
    return config, dataset, specs, data


def _keras_reference(config, dataset, spec, fold):
    """One fold trained by Keras itself, batch by batch, in the fused path's data order."""
    x_train, y_train = fold[0], fold[1]
    model = initial_model(config, dataset, spec.plan, x_train.shape[1:])
    compile_model(model, make_optimizer(spec.optimizer, spec.learning_rate), loss=spec.loss,
                  metrics=spec.metrics)
    size = config.training.batch_size
    for order in batch_order(spec.batch_seed, len(x_train), epochs=spec.plan.epochs):
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            model.train_on_batch(x_train[rows], y_train[rows])
    return model.get_weights()


# ----------------------------------------------------------------------------- data order
def test_batch_order_is_a_seeded_permutation_per_epoch():
    order = batch_order(11, 23, epochs=4)
    assert order.shape == (4, 23)
    for epoch in order:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(23))
    np.testing.assert_array_equal(order, batch_order(11, 23, epochs=4))
    assert not np.array_equal(order, batch_order(12, 23, epochs=4))
    assert not np.array_equal(order[0], order[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"n_train": 0, "epochs": 1}, "Argument `n_train` must be >= 1. Received: n_train=0"),
    ({"n_train": 5, "epochs": 0}, "Argument `epochs` must be >= 1. Received: epochs=0"),
])
def test_batch_order_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        batch_order(0, **kwargs)


# ----------------------------------------------------------------------------- support
def _with(tiny, path, value):
    experiment = copy.deepcopy(tiny)
    node = experiment
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return experiment


def test_fused_support_accepts_independent_folds(tiny_experiment):
    config = load_config(tiny_experiment)
    assert fused_support(config, list(config.strategies)) == (True, "")
    for name in ("adam", "rmsprop"):
        adam = load_config(_with(tiny_experiment, ["training", "optimizer"], {"name": name}))
        assert fused_support(adam, ["constant"]) == (True, "")


@pytest.mark.parametrize("path, value, word", [
    (["strategies", "clr_continue", "carry_weights"], True, "carry_weights needs folds in sequence"),
    (["training", "metrics"], ["auc"], "metric 'auc'"),
    (["training", "loss"], "my.module:loss", "no per-sample form"),
])
def test_fused_support_refuses_what_cannot_be_masked_per_branch(tiny_experiment, path, value, word):
    config = load_config(_with(tiny_experiment, path, value))
    ok, reason = fused_support(config, list(config.strategies))
    assert not ok
    assert word in reason
    assert "\n" not in reason


@pytest.mark.parametrize("path, value", [
    (["strategies", "clr_reset", "cycle_momentum"], {}),
    (["strategies", "restarts"], {"schedule": "cosine_restarts", "lr": 0.1, "snapshots": {"keep": 2}}),
    (["training", "early_stopping"], {"patience": 2}),
    (["model", "batch_norm"], True),
    (["model", "dropout"], 0.3),
    (["model"], {"kind": "cnn"}),
])
def test_fused_support_accepts_what_each_branch_does_on_its_own(tiny_experiment, path, value):
    config = load_config(_with(tiny_experiment, path, value))
    assert fused_support(config, list(config.strategies)) == (True, "")


def test_fused_support_rejects_unknown_strategies(tiny_experiment):
    config = load_config(tiny_experiment)
    with pytest.raises(ValueError, match="Received: 'nope'"):
        fused_support(config, ["constant", "nope"])
    with pytest.raises(ValueError, match="at least one strategy"):
        fused_support(config, [])


def test_train_fused_refuses_unsupported_config(tiny_experiment):
    config, dataset, specs, data = _setup(_with(tiny_experiment, ["strategies", "clr_continue", "carry_weights"], True))
    with pytest.raises(ValueError, match="cannot be trained fused: clr_continue: carry_weights"):
        train_fused(config, dataset, specs, fold_data=data)
    config, dataset, specs, data = _setup(tiny_experiment)
    with pytest.raises(ValueError, match="Received no data for"):
        train_fused(config, dataset, specs, fold_data={})
    with pytest.raises(ValueError, match="at least one FoldSpec"):
        train_fused(config, dataset, [], fold_data=data)


# ----------------------------------------------------------------------------- exactness
OPTIMIZERS = [
    {"name": "sgd", "momentum": 0.9},
    pytest.param({"name": "sgd", "momentum": 0.0}, marks=pytest.mark.slow),
    pytest.param({"name": "sgd", "momentum": 0.8, "nesterov": True}, marks=pytest.mark.slow),
    pytest.param({"name": "sgd", "momentum": 0.9, "weight_decay": 0.01, "clipnorm": 0.5},
                 marks=pytest.mark.slow),
    pytest.param({"name": "adam"}, marks=pytest.mark.slow),
    pytest.param({"name": "rmsprop"}, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_branch_follows_its_own_schedule_exactly(optimizer):
    """Per-branch CLR (reset, continue offsets, range-test bounds) equals Keras's own update."""
    config, dataset, specs, data = _setup(_with(LINEAR, ["training", "optimizer"], optimizer))
    records = train_fused(config, dataset, specs, fold_data=data, keep_weights=True)
    assert {spec.plan.initial_step for spec in specs} != {0}  # `continue` offsets are exercised
    assert {spec.max_lr for spec in specs} >= {TESTED_BOUNDS[1]}  # and range-test bounds
    for spec, record in zip(specs, records):
        expected = _keras_reference(config, dataset, spec, data[spec.key])
        for got, want in zip(record["weights"], expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        assert record["row"]["iterations"] == spec.plan.iterations


def test_branches_start_from_initial_model_weights(tiny_experiment):
    experiment = _with(tiny_experiment, ["strategies"], {"still": {"schedule": "constant", "lr": 1e-30}})
    experiment["training"]["optimizer"] = {"name": "sgd", "momentum": 0.0}
    config, dataset, specs, data = _setup(experiment)
    records = train_fused(config, dataset, specs, fold_data=data, keep_weights=True)
    for spec, record in zip(specs, records):
        model = initial_model(config, dataset, spec.plan, data[spec.key][0].shape[1:])
        for got, want in zip(record["weights"], model.get_weights(), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-20)


# ----------------------------------------------------------------------------- masking
def test_validation_rows_never_reach_a_gradient():
    """Distinctive validation targets change nothing in any branch's trained weights."""
    config, dataset, specs, data = _setup(LINEAR)
    first = specs[0].key
    poisoned = dict(data)
    x_train, y_train, x_val, y_val = data[first]
    poisoned[first] = (x_train, y_train, x_val * 0 + 50.0, np.full_like(y_val, 1e6))
    clean = train_fused(config, dataset, specs, fold_data=data, keep_weights=True)
    dirty = train_fused(config, dataset, specs, fold_data=poisoned, keep_weights=True)
    for a, b in zip(clean, dirty):
        for got, want in zip(a["weights"], b["weights"]):
            np.testing.assert_array_equal(got, want)
    hit = [b for a, b in zip(clean, dirty) if a["row"]["fold"] == 0]
    assert all(record["row"]["val_loss"] > 1e6 for record in hit)  # the rows were evaluated, not trained on


def test_a_diverging_branch_stops_at_the_end_of_that_epoch_as_in_keras_and_the_others_go_on():
    experiment = _with(LINEAR, ["strategies"], {
        "calm": {"schedule": "constant", "lr": 0.01},
        "wild": {"schedule": "constant", "lr": 1e3},  # the largest LR allowed: the loss overflows within a few epochs
    })
    experiment = _with(experiment, ["training", "epochs"], 5)
    config, dataset, specs, data = _setup(experiment)
    records = train_fused(config, dataset, specs, fold_data=data, keep_weights=True)
    alone = train_fused(config, dataset, [s for s in specs if s.strategy == "calm"], fold_data=data,
                        keep_weights=True)
    calm = [r for r in records if r["row"]["strategy"] == "calm"]
    wild = [r for r in records if r["row"]["strategy"] == "wild"]
    wild_specs = [s for s in specs if s.strategy == "wild"]
    for record, spec in zip(wild, wild_specs, strict=True):
        assert record["row"]["diverged"] and record["row"]["status"] == "diverged"
        assert record["row"]["epochs"] == record["row"]["diverged_epoch"] == len(record["history"])
        assert record["row"]["iterations"] < config.training.epochs * 3
        assert not np.isfinite(record["history"][-1]["loss"])
        sequential = train_fold(config, dataset, spec, fold_data=data[spec.key])["row"]
        for column in ("iterations", "diverged_epoch", "final_lr", "diverged_lr", "epochs"):
            assert record["row"][column] == sequential[column], column
    for record, single in zip(calm, alone):
        assert record["row"]["status"] == "ok" and np.isfinite(record["row"]["val_loss"])
        for got, want in zip(record["weights"], single["weights"]):
            np.testing.assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------- records
@pytest.mark.slow
def test_records_match_the_sequential_trainer(tiny_experiment):
    experiment = _with(tiny_experiment, ["training", "epochs"], 8)
    experiment["data"]["params"]["n_samples"] = 150
    config, dataset, specs, data = _setup(experiment)
    seen = []
    fused = train_fused(config, dataset, specs, fold_data=data,
                        progress=lambda plan, epoch, logs: seen.append((plan.key, epoch)))
    sequential = [train_fold(config, dataset, spec, fold_data=data[spec.key]) for spec in specs]
    assert len(seen) == len(specs) * 8
    for a, b in zip(fused, sequential, strict=True):
        assert list(a) == list(b)
        assert list(a["row"]) == list(b["row"])
        assert [list(h) for h in a["history"]] == [list(h) for h in b["history"]]
        assert [h["lr"] for h in a["history"]] == pytest.approx([h["lr"] for h in b["history"]])
        assert a["lr"] == b["lr"]
        assert a["row"]["iterations"] == b["row"]["iterations"]
    # The same batches and updates: the same numbers up to floating-point order.
    for column in ("val_loss", "train_loss", "val_accuracy", "final_lr"):
        np.testing.assert_allclose([r["row"][column] for r in fused], [r["row"][column] for r in sequential],
                                   rtol=1e-4, atol=1e-6, err_msg=column)
    np.testing.assert_allclose([h["val_loss"] for r in fused for h in r["history"]],
                               [h["val_loss"] for r in sequential for h in r["history"]], rtol=1e-4)
    assert np.mean([r["row"]["val_accuracy"] for r in fused]) > 0.6


def test_dropout_masks_are_shared_by_a_folds_strategies_whatever_is_fused_with_it(tiny_experiment):
    """Strategies stay paired under dropout: the mask comes from the fold's seed, not the group's."""
    from kfold_clr.training.trainer import PreparedFolds

    experiment = copy.deepcopy(tiny_experiment)
    experiment["model"]["dropout"] = 0.5
    experiment["strategies"] = {"a": {"schedule": "constant", "lr": 0.01}, "b": {"schedule": "constant", "lr": 0.01}}
    config, dataset, splits, _ = prepare(experiment)
    specs = [fold_spec(config, plan) for name in ("a", "b")
             for plan in plan_folds(name, config.strategies[name], splits, seed=config.seed, epochs=2, batch_size=16)]
    data = PreparedFolds(dataset, splits, config.data)
    losses = [record["row"]["val_loss"] for record in train_fused(config, dataset, specs, fold_data=data)]
    n = len(splits)
    assert losses[:n] == losses[n:]  # same fold, same masks: identical strategies give identical numbers
    assert len(set(losses[:n])) == n  # different folds, different masks and data
    alone = train_fused(config, dataset, specs[n:n + 1], fold_data=data)
    assert alone[0]["row"]["val_loss"] == losses[n]


# ----------------------------------------------------------------------------- named steps
def test_fold_layout_stores_each_fold_once_and_maps_branches_to_folds():
    from kfold_clr.training.fused.layout import FoldLayout

    config, dataset, specs, data = _setup(LINEAR)
    layout = FoldLayout(specs, data)
    assert layout.fold_keys == ["r0_f0", "r0_f1"] and len(specs) == 6
    assert [layout.fold_keys[k] for k in layout.fold_of] == [spec.key for spec in specs]
    assert layout.batch_seeds == [spec.batch_seed for spec in specs[:2]]
    for fold, key in enumerate(layout.fold_keys):  # each fold's training rows, once, at its offset
        start, size = layout.train.offsets[fold], layout.train.sizes[fold]
        np.testing.assert_array_equal(layout.train.values.numpy()[start:start + size], data[key][0])
    assert layout.train.values.shape[0] == sum(len(data[key][0]) for key in layout.fold_keys)


def test_lr_table_holds_each_branchs_lrs_and_repeats_the_last_one():
    import types

    from kfold_clr.training.fused.layout import lr_table

    specs = [types.SimpleNamespace(lrs=np.array([0.1, 0.2, 0.3])), types.SimpleNamespace(lrs=np.array([0.5]))]
    np.testing.assert_allclose(lr_table(specs), [[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])


def test_epoch_batches_walk_each_folds_permutation_in_full_then_partial_batches():
    from kfold_clr.training.fused.layout import EpochBatches, FoldLayout

    config, dataset, specs, data = _setup(LINEAR)
    layout = FoldLayout(specs[:2], data)  # two branches on two folds of 18 rows
    orders = {k: batch_order(seed, layout.train.sizes[k], epochs=2) for k, seed in enumerate(layout.batch_seeds)}
    batches = EpochBatches(layout, orders, 1, np.array([True, True]), np.array([3, 3]), batch_size=7)
    index, active, steps = batches.full_steps(0, batches.n_full)
    assert index.shape == (2, 2, 7) and active.all()  # 18 = 7 + 7 + 4 rows: two full batches
    np.testing.assert_array_equal(steps, [[3, 3], [4, 4]])  # epoch 1 starts at step 3
    [(last, last_active, last_steps)] = batches.partial_steps()  # the 4 rows left: one unpadded batch
    assert last.shape == (1, 2, 4) and last_active.all() and (last_steps == 5).all()
    for b, k in enumerate(layout.fold_of):
        rows = np.concatenate([index[:, b].reshape(-1), last[0, b]])
        np.testing.assert_array_equal(rows, layout.train.offsets[k] + orders[k][1])  # epoch 1, in order
    idle = EpochBatches(layout, orders, 1, np.array([True, False]), np.array([3, 3]), batch_size=7)
    assert not idle.full_steps(0, 2)[1][:, 1].any() and not idle.partial_steps()[0][1][0, 1]


def test_folds_of_other_sizes_fuse_when_only_some_end_in_a_partial_batch():
    experiment = copy.deepcopy(LINEAR)
    experiment["data"]["params"]["n_samples"] = 35  # training splits of 17 and 18 rows
    experiment["training"]["batch_size"] = 6  # 17 = 6 + 6 + 5; 18 = 6 + 6 + 6: no partial batch
    experiment["strategies"] = {"clr_reset": LINEAR["strategies"]["clr_reset"]}
    config, dataset, specs, data = _setup(experiment)
    assert sorted(len(spec.plan.split.train) for spec in specs) == [17, 18]
    fused = train_fused(config, dataset, specs, fold_data=data)
    sequential = [train_fold(config, dataset, spec, fold_data=data[spec.key]) for spec in specs]
    assert [r["row"]["iterations"] for r in fused] == [r["row"]["iterations"] for r in sequential] == [9, 9]
    for column in ("val_loss", "train_loss", "final_lr"):
        np.testing.assert_allclose([r["row"][column] for r in fused], [r["row"][column] for r in sequential],
                                   rtol=1e-4, err_msg=column)


def test_fold_specs_are_frozen_and_their_lrs_read_only(tiny_experiment):
    import dataclasses

    config, dataset, specs, data = _setup(tiny_experiment)
    spec = specs[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.batch_seed = 3
    with pytest.raises(ValueError, match="read-only"):
        spec.lrs[0] = 1.0
    assert spec.batch_seed == spec.plan.seed + 1 and spec.loss == "sparse_categorical_crossentropy"


@pytest.mark.slow
def test_auto_is_the_default_fuses_all_but_carried_chains_and_gives_the_sequential_numbers(tiny_experiment):
    from kfold_clr.config import ExecutionConfig
    from kfold_clr.execution.experiment import run_experiment

    assert ExecutionConfig().fused_folds == "auto"
    experiment = copy.deepcopy(tiny_experiment)
    del experiment["execution"]
    experiment["model"]["dropout"] = 0.2  # fused branches draw Keras's own masks
    experiment["strategies"]["carried"] = {**experiment["strategies"]["clr_continue"], "carry_weights": True}
    fused = run_experiment(experiment, verbosity=0).folds
    experiment["output"]["dir"] += "-sequential"
    sequential = run_experiment(experiment, overrides=["execution.fused_folds=false"], verbosity=0).folds
    assert (fused["fused"] == (fused["strategy"] != "carried")).all() and not sequential["fused"].any()
    for column in ("val_loss", "val_accuracy", "train_loss"):
        np.testing.assert_allclose(fused[column], sequential[column], rtol=1e-4, atol=1e-6, err_msg=column)


def test_a_fused_job_that_raises_is_failed_folds_and_the_run_goes_on(tiny_experiment, monkeypatch):
    import kfold_clr.training.fused
    from kfold_clr.execution.experiment import run_experiment

    def broken(*args, **kwargs):
        raise RuntimeError("simulated out-of-memory")

    monkeypatch.setattr(kfold_clr.training.fused, "train_fused", broken)
    experiment = copy.deepcopy(tiny_experiment)
    experiment["execution"] = {"fused_folds": True}
    folds = run_experiment(experiment, verbosity=0).folds
    assert (folds["status"] == "failed").all() and len(folds) == 9
    assert folds["error"].str.contains("RuntimeError: simulated out-of-memory").all()


def test_under_auto_a_fused_job_that_raises_trains_its_folds_one_by_one(tiny_experiment, monkeypatch, capsys,
                                                                        tiny_run):
    import kfold_clr.training.fused
    from kfold_clr.execution.experiment import run_experiment

    def broken(*args, **kwargs):
        raise MemoryError("simulated: the fused model does not fit")

    monkeypatch.setattr(kfold_clr.training.fused, "train_fused", broken)
    experiment = copy.deepcopy(tiny_experiment)
    experiment["execution"] = {"fused_folds": "auto"}
    folds = run_experiment(experiment, verbosity=0).folds
    assert (folds["status"] == "ok").all() and len(folds) == 9 and not folds["fused"].any()
    assert "fused training failed (MemoryError: simulated: the fused model does not fit); training its 9 folds " \
           "one by one" in capsys.readouterr().err
    sequential = tiny_run.folds  # the same experiment with `fused_folds: false`
    np.testing.assert_array_equal(folds["val_loss"], sequential["val_loss"])  # the same fold-by-fold numbers
