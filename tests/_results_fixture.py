"""Small synthetic results directories, written the way the runner writes them.

Used by the analysis, plot and report tests; no TensorFlow involved.
"""

import json

import numpy as np
import pandas as pd

from kfold_clr.config import dump_yaml, load_config
from kfold_clr.storage import ownership

STRATEGIES = {
    "constant": {"schedule": "constant", "lr": 0.01},
    "clr_reset": {"schedule": "clr", "policy": "triangular", "base_lr": 0.005, "max_lr": 0.05,
                  "step_size_epochs": 2, "across_folds": "reset", "snapshots": {"keep": 2}},
    "clr_carry": {"schedule": "clr", "policy": "triangular", "base_lr": 0.005, "max_lr": 0.05,
                  "step_size_epochs": 2, "across_folds": "continue", "carry_weights": True},
}
N_REPEATS = 2
N_SPLITS = 3
EPOCHS = 4
STEPS_PER_EPOCH = 5


def make_config(name="tiny", *, strategies=None, reference=None, rope=0.01):
    """A valid experiment in its resolved form (defaults filled in), as the runner writes config.yaml."""
    raw = {
        "name": name,
        "seed": 0,
        "data": {"source": "synthetic", "name": "classification", "params": {"n_samples": 120, "n_features": 4}},
        "model": {"kind": "mlp", "hidden": [8]},
        "training": {"epochs": EPOCHS, "batch_size": 32, "metrics": ["accuracy"]},
        "cv": {"splitter": "stratified", "n_splits": N_SPLITS, "n_repeats": N_REPEATS, "shuffle": True},
        "strategies": strategies or STRATEGIES,
        "compare": {"reference": reference, "rope": rope, "metrics": None},
    }
    return load_config(raw).to_dict()


def make_folds(*, seed=0, diverged=(("constant", 1, 2),), failed=()):
    """folds.csv rows: 3 strategies x 2 repeats x 3 folds; clr_reset ~3 pp better than constant."""
    rng = np.random.default_rng(seed)
    offsets = {"constant": 0.0, "clr_reset": 0.03, "clr_carry": 0.05}
    rows = []
    split_effect = rng.normal(0.0, 0.02, size=(N_REPEATS, N_SPLITS))
    for name in STRATEGIES:
        for repeat in range(N_REPEATS):
            for fold in range(N_SPLITS):
                accuracy = 0.8 + offsets[name] + split_effect[repeat, fold] + rng.normal(0.0, 0.005)
                status = "ok"
                if (name, repeat, fold) in diverged:
                    status = "diverged"
                if (name, repeat, fold) in failed:
                    status = "failed"
                bad = status != "ok"
                rows.append({
                    "strategy": name, "repeat": repeat, "fold": fold, "seed": 100 * repeat + fold,
                    "status": status, "error": "ValueError: boom" if status == "failed" else "",
                    "n_train": 80, "n_val": 40, "epochs": EPOCHS, "iterations": EPOCHS * STEPS_PER_EPOCH,
                    "fit_seconds": 1.0 + 0.1 * fold,
                    "base_lr": 0.005 if name != "constant" else 0.01,
                    "max_lr": 0.05 if name != "constant" else 0.01,
                    "final_lr": 0.005 if name != "constant" else 0.01,
                    "diverged": status == "diverged",
                    "leaky": name == "clr_carry" and fold > 0,
                    "optimistic": False,
                    "train_loss": np.nan if bad else 0.3,
                    "val_loss": np.nan if bad else 1.2 - accuracy,
                    "train_accuracy": np.nan if bad else min(accuracy + 0.1, 1.0),
                    "val_accuracy": np.nan if bad else accuracy,
                    "snapshot_val_loss": (1.2 - accuracy - 0.01) if name == "clr_reset" else np.nan,
                    "snapshot_val_accuracy": (accuracy + 0.01 + rng.normal(0.0, 0.003))
                    if name == "clr_reset" else np.nan,
                    "n_snapshots": 2 if name == "clr_reset" else np.nan,
                })
    return pd.DataFrame(rows)


def _triangle(iteration, base, peak, step):
    cycle = np.floor(1 + iteration / (2 * step))
    x = np.abs(iteration / step - 2 * cycle + 1)
    return base + (peak - base) * np.maximum(0.0, 1 - x)


def make_history(folds):
    rows = []
    for record in folds.itertuples():
        for epoch in range(1, EPOCHS + 1):
            accuracy = record.val_accuracy - 0.02 * (EPOCHS - epoch) if record.status == "ok" else np.nan
            rows.append({"strategy": record.strategy, "repeat": record.repeat, "fold": record.fold,
                         "epoch": epoch, "lr": record.base_lr, "loss": 1.0 / epoch,
                         "accuracy": 0.6 + 0.05 * epoch, "val_loss": 1.1 / epoch, "val_accuracy": accuracy})
    return pd.DataFrame(rows)


def make_lr(folds):
    rows = []
    n = EPOCHS * STEPS_PER_EPOCH
    for record in folds.itertuples():
        offset = (record.repeat * N_SPLITS + record.fold) * n if record.strategy == "clr_carry" else 0
        for iteration in range(n):
            if record.strategy == "constant":
                lr = 0.01
            else:
                lr = _triangle(offset + iteration, 0.005, 0.05, 7)
            rows.append({"strategy": record.strategy, "repeat": record.repeat, "fold": record.fold,
                         "iteration": iteration, "global_iteration": offset + iteration, "lr": float(lr)})
    return pd.DataFrame(rows)


def make_range_tests():
    lr = np.geomspace(1e-5, 1.0, 40)
    loss = 2.0 - np.tanh(np.log10(lr / 1e-4)) + np.where(lr > 0.2, 5 * (lr - 0.2), 0)
    return pd.DataFrame({"scope": "shared", "iteration": np.arange(lr.size), "lr": lr, "loss": loss,
                         "smoothed_loss": loss, "accuracy": 0.5, "smoothed_accuracy": 0.5,
                         "used": True, "base_lr": 0.005, "max_lr": 0.05})


def write_results_dir(path, *, config=None, folds=None, range_tests=True):
    """Write a complete small results directory at ``path`` and return it."""
    ownership.claim(path)  # created and marked as `kfold-clr run` does
    config = config or make_config()
    folds = make_folds() if folds is None else folds
    (path / "config.yaml").write_text(dump_yaml(config))
    folds.to_csv(path / "folds.csv", index=False)
    make_history(folds).to_csv(path / "history.csv", index=False)
    make_lr(folds).to_csv(path / "lr.csv", index=False)
    if range_tests:
        make_range_tests().to_csv(path / "range_tests.csv", index=False)
    run = {"seed": 0, "git_commit": "abc1234", "keras": "3.15", "command": "kfold-clr run tiny.yaml",
           "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00", "outcome": "finished"}
    (path / "meta.json").write_text(json.dumps({"runs": [run]}))
    return path
