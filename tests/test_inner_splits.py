"""A tuned strategy's inner splits come from the outer splits' factory, shuffled by the fold's seed; the
one kind this changed (group k-fold: groups, no stratification) has a new fingerprint, so its old
saved fits are refused, never mixed with new ones (issue 25)."""

import copy
import dataclasses
import json

import numpy as np
import pytest

from kfold_clr.errors import ResultsError
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.planning.preflight import prepare
from kfold_clr.storage import provenance
from kfold_clr.storage.store import ResultsStore
from kfold_clr.training.tuning import GROUP_INNER_SPLITS, fit_key, grid_plans, inner_splits


def _experiment(tmp_path, tiny_experiment, *, task="regression", groups=True, select="inner_cv"):
    """A tiny experiment on 60 rows in 20 groups of 3 with a tuned step schedule and a constant one."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=60).astype("float32") if task == "regression" else np.arange(60) % 3
    arrays = {"x": rng.normal(size=(60, 4)).astype("float32"), "y": y}
    if groups:
        arrays["groups"] = np.arange(60) // 3
    np.savez(tmp_path / "data.npz", **arrays)
    experiment = copy.deepcopy(tiny_experiment)
    experiment["data"] = {"source": "npz", "path": str(tmp_path / "data.npz")}
    experiment["cv"] = {"splitter": "auto", "n_splits": 3}
    experiment["training"]["epochs"] = 1
    experiment["strategies"] = {
        "constant": experiment["strategies"]["constant"],
        "step": {"schedule": "step", "lr": [0.01, 0.1], "factor": 0.5, "every_epochs": 1,
                 "tune": {"select": select, **({"n_splits": 2} if select == "inner_cv" else {})}},
    }
    return experiment


def test_inner_group_kfold_shuffles_with_the_folds_seed(tmp_path, tiny_experiment):
    from sklearn.model_selection import GroupKFold

    config, dataset, _, _ = prepared = prepare(_experiment(tmp_path, tiny_experiment))
    for plan in prepared.plans["step"]:
        inner = inner_splits(config, dataset, plan)
        rows = np.asarray(plan.split.train)
        assert len(inner) == 2 and sorted(np.concatenate([s.val for s in inner]).tolist()) == sorted(rows.tolist())
        for split in inner:  # whole groups on one side
            assert not set(dataset.groups[split.train]) & set(dataset.groups[split.val])
        unshuffled = [rows[val].tolist() for _, val in GroupKFold(2).split(rows, groups=dataset.groups[rows])]
        assert sorted(s.val.tolist() for s in inner) != sorted(unshuffled)  # the old, unshuffled inner folds
        other = inner_splits(config, dataset, dataclasses.replace(plan, seed=plan.seed + 1))
        assert [s.val.tolist() for s in other] != [s.val.tolist() for s in inner]  # another seed, other folds
        assert [s.val.tolist() for s in inner_splits(config, dataset, plan)] == [s.val.tolist() for s in inner]


@pytest.mark.parametrize("task, groups, select, changed", [
    ("regression", True, "inner_cv", True),  # the only inner splitter that did not shuffle
    ("regression", True, "holdout", False),
    ("regression", False, "inner_cv", False),
    ("classification", True, "inner_cv", False),
    ("classification", False, "inner_cv", False),
])
def test_only_a_tuned_group_kfold_strategy_has_a_new_fingerprint(tmp_path, tiny_experiment, task, groups, select,
                                                                 changed):
    prepared = prepare(_experiment(tmp_path, tiny_experiment, task=task, groups=groups, select=select))
    config, dataset, _, _ = prepared
    for name in ("constant", "step"):
        for fused in (False, True):
            before = provenance.strategy_fingerprint(config, dataset, name, fused=fused)  # as earlier versions made it
            assert (prepared.prints.of(name, fused=fused) != before) == (changed and name == "step")
    parts = provenance.fingerprint_parts(prepared.prints.of("step"))
    assert (parts.get("config (inner_splits)") == provenance.fingerprint(GROUP_INNER_SPLITS)) == changed


def _save_old(store, config, dataset, *, outer=False, fit=False):
    """Records of the strategy `step` as an earlier version saved them: its old fingerprint."""
    old = provenance.strategy_fingerprint(config, dataset, "step")
    record = {"row": {"strategy": "step", "status": "ok", "val_loss": 1.0}, "fingerprint": old, "history": []}
    store.open()
    try:
        if outer:
            store.save_record("step", "r0_f0", record)
        if fit:
            store.save_fit("step", "r0_f0_i0of2_p0", record)
    finally:
        store.close()


@pytest.mark.parametrize("saved", [pytest.param("outer", marks=pytest.mark.slow), "fit"])
def test_an_old_tuned_group_kfold_result_is_refused_then_retrained(tmp_path, tiny_experiment, saved):
    experiment = _experiment(tmp_path, tiny_experiment)
    experiment["cv"]["n_splits"] = 2
    del experiment["strategies"]["constant"]
    config, dataset, _, _ = prepare(experiment)
    store = ResultsStore(config.output_dir)
    _save_old(store, config, dataset, outer=saved == "outer", fit=saved == "fit")
    with pytest.raises(ResultsError, match=r"strategy 'step' from a different config, data or code "
                                           r"\(config \(inner_splits\) is new\); rerun with --fresh"):
        run_experiment(experiment, verbosity=0)
    if saved == "fit":
        return
    results = run_experiment(experiment, verbosity=0, resume=False)  # --fresh: trained again
    prepared = prepare(experiment)
    record = json.loads((config.output_dir / "folds" / "step" / "r0_f0.json").read_text())
    old = provenance.strategy_fingerprint(config, dataset, "step")
    assert record["fingerprint"] == prepared.prints.of("step") != old
    assert (results.folds.strategy == "step").sum() == 2 and (results.folds.status == "ok").all()
    fits = [fit for plan in prepared.plans["step"]
            for _, fit in grid_plans(config, plan, prepared.inner["step", plan.key])]
    saved_fits = {path.stem: json.loads(path.read_text())["fingerprint"]
                  for path in (config.output_dir / "folds" / "step" / "tune").glob("*.json")}
    assert sorted(saved_fits) == sorted(fit_key(fit) for fit in fits)
    assert set(saved_fits.values()) == {prepared.prints.of("step")}


def test_a_later_folds_inner_splits_that_cannot_be_made_are_refused_before_anything_is_written(
        tmp_path, tiny_experiment):
    from kfold_clr.data.splits import save_given_splits
    from kfold_clr.errors import ConfigError

    experiment = _experiment(tmp_path, tiny_experiment)
    rows = np.arange(60)  # groups of 3 rows: fold 0 trains on 10 groups, fold 1 on a single group
    save_given_splits(tmp_path / "splits.npz", [(rows[:30], rows[30:]), (rows[:3], rows[3:30])])
    experiment["cv"] = {"splitter": "given", "path": str(tmp_path / "splits.npz")}
    with pytest.raises(ConfigError, match=r"strategies.step.tune: .* cannot split the 3 training rows of fold r0_f1"):
        prepare(experiment)
    assert not (tmp_path / "results").exists()
