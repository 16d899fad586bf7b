"""Tuned strategies: each grid point scored inside an outer fold's training rows, the best one refitted.

For a strategy with a `tune:` entry, every outer fold (repeat, fold) does, in order:

1. Split its *training* rows again (`tune.select`): `inner_cv` into `n_splits` inner folds,
   `holdout` into one training and one held-out part (stratified for classification, whole
   groups where there are groups, seeded by the fold's seed). The outer validation rows are
   in none of them.
2. Train every grid point on every inner split (an inner fit is an ordinary fold plan with
   the point's settings, fused where the strategy is), scored on its inner validation rows.
3. Choose the point with the best mean inner score (`tune.metric`, lowest loss or highest
   accuracy-like metric; a diverged or failed fit is the worst) and refit it on the whole
   outer training split: an ordinary fold run with that point's values, scored on the outer
   validation fold as every other strategy is.

`select: outer` skips the inner splits: each point trains on the outer fold and the one
with the best outer validation score is kept, which is how naive tuning inflates a score;
those rows are marked optimistic. Inner fits are saved as they finish
(`folds/NAME/tune/`) and reused on resume.
"""

import math

import numpy as np

from kfold_clr.analysis import stats, tables
from kfold_clr.splits import Split
from kfold_clr.strategies import FoldPlan

OUTER_REASON = f"{tables.TUNED_ON_VALIDATION_REASON} (tune.select: outer)"


def inner_splits(config, dataset, plan) -> list:
    """The splits of `plan`'s training rows that score the grid (none for `select: outer`)."""
    from sklearn import model_selection

    tune = config.strategies[plan.strategy].tune
    rows = np.asarray(plan.split.train)
    if tune.select == "outer":
        return []
    y = dataset.y[rows] if dataset.task == "classification" else None
    groups = dataset.groups[rows] if dataset.groups is not None else None
    seed = plan.seed
    if tune.select == "holdout":
        if groups is not None:
            splitter = model_selection.GroupShuffleSplit(n_splits=1, test_size=tune.fraction, random_state=seed)
        elif y is not None and _stratifiable(y, 2):
            splitter = model_selection.StratifiedShuffleSplit(n_splits=1, test_size=tune.fraction, random_state=seed)
        else:
            splitter = model_selection.ShuffleSplit(n_splits=1, test_size=tune.fraction, random_state=seed)
        parts = list(splitter.split(rows, y, groups))
        names = ["holdout"]
    else:
        if groups is not None:
            splitter = (model_selection.StratifiedGroupKFold(tune.n_splits, shuffle=True, random_state=seed)
                        if y is not None else model_selection.GroupKFold(tune.n_splits))
        elif y is not None and _stratifiable(y, tune.n_splits):
            splitter = model_selection.StratifiedKFold(tune.n_splits, shuffle=True, random_state=seed)
        else:
            splitter = model_selection.KFold(tune.n_splits, shuffle=True, random_state=seed)
        parts = list(splitter.split(rows, y, groups))
        names = [f"i{j}" for j in range(len(parts))]
    return [Split(plan.split.repeat, plan.split.fold, rows[train], rows[val], inner=name)
            for name, (train, val) in zip(names, parts)]


def _stratifiable(y, n_splits) -> bool:
    counts = np.bincount(np.asarray(y, dtype=int))
    return int(counts[counts > 0].min()) >= n_splits


def grid_plans(config, plan, splits) -> list:
    """One plan per (grid point, split): `splits` inner splits, or the outer split for `select: outer`.

    Returns:
        List of (point index, FoldPlan); each plan carries its point as `settings` and keeps
        the outer fold's seed (initial weights) and schedule offset.
    """
    strategy = config.strategies[plan.strategy]
    batch_size = config.training.batch_size
    out = []
    for index, point in enumerate(strategy.grid_points()):
        for split in splits or [plan.split]:
            out.append((index, FoldPlan(plan.strategy, split, plan.seed, math.ceil(len(split.train) / batch_size),
                                        plan.epochs, initial_step=plan.initial_step,
                                        settings=tuple(point.items()), fit=index)))
    return out


def fit_key(plan) -> str:
    """Where a grid fit is saved: its split's key and its grid point's index."""
    return f"{plan.key}_p{plan.fit}"


def score(record, metric) -> float:
    """The fit's validation score to minimise (a higher-is-better metric negated); inf when unusable."""
    row = record.get("row", {}) if record else {}
    value = row.get(f"val_{metric}")
    if row.get("status") != "ok" or value is None or not math.isfinite(float(value)):
        return math.inf
    return -float(value) if stats.higher_is_better(metric) else float(value)


def choose(config, name, fits):
    """The best grid point from its fits: `fits` is a list of (point index, record).

    Returns:
        (point index, mean score of every point): the lowest mean score wins, the first on ties.
    """
    metric = config.strategies[name].tune.metric
    n_points = len(config.strategies[name].grid_points())
    per_point = [[score(record, metric) for index, record in fits if index == p] for p in range(n_points)]
    means = [float(np.mean(values)) if values else math.inf for values in per_point]
    return int(np.argmin(means)), means


def tuned_plan(config, plan, point_index) -> FoldPlan:
    """The outer plan refitted with the chosen grid point."""
    import dataclasses

    point = config.strategies[plan.strategy].grid_points()[point_index]
    return dataclasses.replace(plan, settings=tuple(point.items()))


def tune_fields(config, name, point_index, means, fits) -> dict:
    """The tuning columns of an outer fold's row: the chosen values, the scores, what tuning cost."""
    tune = config.strategies[name].tune
    point = config.strategies[name].grid_points()[point_index]
    rows = [(record or {}).get("row", {}) for _, record in fits]  # a failed fit: None
    fields = {f"tuned_{key}": value for key, value in point.items()}
    fields.update(tune_select=tune.select, tune_points=len(means), tune_fits=len(fits),
                  tune_score=means[point_index] if math.isfinite(means[point_index]) else math.nan,
                  tune_iterations=int(sum(int(r.get("iterations") or 0) for r in rows)),
                  tune_seconds=round(float(sum(float(r.get("fit_seconds") or 0.0) for r in rows)), 4))
    return fields


def decide(config, plan, fits):
    """What an outer fold of a tuned strategy does with its grid fits (`fits`: (point index, record or None)).

    Returns:
        (refit plan, None, tuning columns), or for `select: outer` (None, the chosen fit's
        record, tuning columns): that fit trained on the outer fold and is its result.
    """
    name = plan.strategy
    best, means = choose(config, name, fits)
    if config.strategies[name].tune.select == "outer":  # one fit per point, in grid order
        others = [fit for index, fit in enumerate(fits) if index != best]
        return None, fits[best][1], tune_fields(config, name, best, means, others)
    return tuned_plan(config, plan, best), None, tune_fields(config, name, best, means, fits)
