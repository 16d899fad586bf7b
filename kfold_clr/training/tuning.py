"""Tuned strategies: each grid point scored inside an outer fold's training rows, the best one refitted.

For a strategy with a `tune:` entry, every outer fold (repeat, fold) does, in order:

1. Split its *training* rows again (`tune.select`): `inner_cv` into `n_splits` inner folds,
   `holdout` into one training and one held-out part, with the splitter kinds of the outer
   splits (`kfold_clr.data.splits.make_splitter`: stratified for classification, whole groups
   where there are groups), shuffled by the fold's seed. The outer validation rows are in
   none of them.
2. Train every grid point on every inner split (an inner fit is an ordinary fold plan with
   the point's settings, fused where the strategy is), scored on its inner validation rows.
3. Choose the point with the best mean inner score (`tune.metric`, lowest loss or highest
   accuracy-like metric; a point with a diverged fit is the worst, one whose fits did not all
   finish is not scored) and refit it on the whole outer training split: an ordinary fold
   run with that point's values, scored on the outer validation fold as every other
   strategy is. When no point could be scored the outer fold is failed (never a silent
   default); a rerun retries the grid fits that failed.

`select: outer` skips the inner splits: each point trains on the outer fold and the one
with the best outer validation score is kept, which is how naive tuning inflates a score;
those rows are marked optimistic. Inner fits are saved as they finish
(`folds/NAME/tune/`) and reused on resume.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Optional

import numpy as np

from kfold_clr.analysis import stats, tables
from kfold_clr.data.splits import (
    Split,
    make_holdout_splitter,
    make_splitter,
    resolve_splitter,
    split_rows,
    steps_per_epoch,
)
from kfold_clr.training.fold_plans import FoldPlan
from kfold_clr.training.fold_record import Tuning

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.config.strategy_base import TuneConfig
    from kfold_clr.data.datasets import Dataset

OUTER_REASON = f"{tables.TUNED_ON_VALIDATION_REASON} (tune.select: outer)"
#: Why inner group k-folds are part of a tuned strategy's fingerprint: they once did not shuffle.
GROUP_INNER_SPLITS = "group k-fold, shuffled by the fold's seed"


def _inner_kind(dataset: Dataset, tune: TuneConfig, rows: np.ndarray | None = None) -> str:
    """The splitter kind of a fold's inner splits: the outer `auto` kind for the task and data,
    unstratified where a class of `rows` has too few rows for every inner part."""
    name = resolve_splitter("auto", task=dataset.task, has_groups=dataset.groups is not None)
    parts = 2 if tune.select == "holdout" else tune.n_splits
    if name == "stratified" and rows is not None and not _stratifiable(dataset.y[rows], parts):
        return "kfold"
    return name


def inner_splits(config: ExperimentConfig, dataset: Dataset, plan: FoldPlan) -> list[Split]:
    """The splits of `plan`'s training rows that score the grid (none for `select: outer`)."""
    tune = config.strategies[plan.strategy].tune
    rows = np.asarray(plan.split.train)
    if tune.select == "outer":
        return []
    name = _inner_kind(dataset, tune, rows)
    if tune.select == "holdout":
        splitter = make_holdout_splitter(name, test_size=tune.fraction, random_state=plan.seed)
    else:
        splitter = make_splitter(name, n_splits=tune.n_splits, shuffle=True, random_state=plan.seed)
    parts = split_rows(splitter, name, dataset, rows)
    if tune.select == "holdout":
        names = [f"holdout{_digest(rows[parts[0][1]])}"]  # the fraction's rows, whatever its digits
    else:
        names = [f"i{j}of{tune.n_splits}" for j in range(len(parts))]
    return [Split(plan.split.repeat, plan.split.fold, rows[train], rows[val], inner=name)
            for name, (train, val) in zip(names, parts)]


def fingerprint_inputs(config: ExperimentConfig, dataset: Dataset) -> dict[str, dict]:
    """Per strategy, what its folds depend on besides the config and data
    (`provenance.strategy_fingerprint(extra=...)`): a tuned strategy whose inner splits are group
    k-folds names them, since they once did not shuffle (its saved inner fits saw other rows)."""
    return {name: {"inner_splits": GROUP_INNER_SPLITS} for name, strategy in config.strategies.items()
            if strategy.tune is not None and strategy.tune.select == "inner_cv"
            and _inner_kind(dataset, strategy.tune) == "group"}


def _digest(rows: np.ndarray) -> str:
    """Eight hex digits naming a set of rows (a split key must identify its rows)."""
    import hashlib

    return hashlib.sha1(np.asarray(sorted(rows), dtype=np.int64).tobytes()).hexdigest()[:8]


def _stratifiable(y: np.ndarray, n_splits: int) -> bool:
    counts = np.bincount(np.asarray(y, dtype=int))
    return int(counts[counts > 0].min()) >= n_splits


def grid_plans(config: ExperimentConfig, plan: FoldPlan, splits: list[Split]) -> list[tuple[int, FoldPlan]]:
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
            out.append((index, FoldPlan(plan.strategy, split, plan.seed, steps_per_epoch(len(split.train), batch_size),
                                        plan.epochs, initial_step=plan.initial_step,
                                        settings=tuple(point.items()), fit=index)))
    return out


def fit_key(plan: FoldPlan) -> str:
    """Where a grid fit is saved: its split's key and its grid point's index."""
    return f"{plan.key}_p{plan.fit}"


def score(record: dict | None, metric: str) -> float:
    """The fit's validation score in its metric's own units; NaN when it did not finish or diverged."""
    row = record.get("row", {}) if record else {}
    value = row.get(f"val_{metric}")
    if row.get("status") != "ok" or value is None or not math.isfinite(float(value)):
        return math.nan
    return float(value)


def _finished(record: dict | None) -> bool:
    """Whether a grid fit ran to its end: ok or diverged (a result); a failed or missing fit did not."""
    return bool(record) and record.get("row", {}).get("status") in ("ok", "diverged")


@dataclasses.dataclass(frozen=True)
class Choice:
    """The grid point an outer fold keeps, and how its grid was scored.

    Attributes:
        best: int or None. The chosen point's index; None when no point could be scored.
        means: list of float. Each point's mean inner score in its metric's own units; NaN for
            a point with a diverged fit (it loses) or one not scored.
        scored: list of bool. Per point: every one of its fits finished, so it could be scored.
        failed_fits: int. Fits that failed or never ran.
    """

    best: Optional[int]
    means: list
    scored: list
    failed_fits: int

    @property
    def unscored(self) -> int:
        return self.scored.count(False)


def choose(config: ExperimentConfig, name: str, fits: list[tuple[int, dict | None]]) -> Choice:
    """The best grid point from its fits: `fits` is a list of (point index, record or None).

    A point is scored only when every one of its fits finished (ok or diverged), so that
    every point is judged on the same inner splits; a diverged fit makes its point the
    worst. The best mean in the metric's direction wins, the first on ties; no point
    scored, or every scored point diverged somewhere: `best` is None (the outer fold fails).
    """
    metric = config.strategies[name].tune.metric
    n_points = len(config.strategies[name].grid_points())
    records = [[record for index, record in fits if index == p] for p in range(n_points)]
    scored = [bool(group) and all(_finished(record) for record in group) for group in records]
    means = [float(np.mean([score(record, metric) for record in group])) if ok else math.nan
             for group, ok in zip(records, scored)]
    sign = -1.0 if stats.higher_is_better(metric) else 1.0
    candidates = [p for p in range(n_points) if math.isfinite(means[p])]  # NaN: unscored, or a fit diverged
    best = min(candidates, key=lambda p: (sign * means[p], p)) if candidates else None
    failed = sum(not _finished(record) for _, record in fits)
    return Choice(best, means, scored, failed)


def tuned_plan(config: ExperimentConfig, plan: FoldPlan, point_index: int) -> FoldPlan:
    """The outer plan refitted with the chosen grid point."""
    point = config.strategies[plan.strategy].grid_points()[point_index]
    return dataclasses.replace(plan, settings=tuple(point.items()))


def tuning_columns(config: ExperimentConfig, name: str, choice: Choice,
                   fits: list[tuple[int, dict | None]]) -> Tuning:
    """The tuning columns of an outer fold's row: the chosen values, the scores, what tuning cost.

    `tune_fits` counts the fits that ran (finished), `tune_failed_fits` those that failed
    or never ran, `tune_unscored_points` the points left unscored because of them.
    """
    tune = config.strategies[name].tune
    rows = [record["row"] for _, record in fits if _finished(record)]
    values = {} if choice.best is None else dict(config.strategies[name].grid_points()[choice.best])
    return Tuning(values, select=tune.select, points=len(choice.means), fits=len(rows),
                  failed_fits=choice.failed_fits, unscored_points=choice.unscored,
                  score=math.nan if choice.best is None else choice.means[choice.best],
                  iterations=int(sum(int(r.get("iterations") or 0) for r in rows)),
                  seconds=round(float(sum(float(r.get("fit_seconds") or 0.0) for r in rows)), 4))


def tune_fields(config: ExperimentConfig, name: str, choice: Choice, fits: list[tuple[int, dict | None]]) -> dict:
    """`tuning_columns` as the row's columns (`tuned_lr`, `tune_select`, ...)."""
    return tuning_columns(config, name, choice, fits).columns()


@dataclasses.dataclass(frozen=True)
class Decision:
    """What an outer fold of a tuned strategy does next (`decide`).

    Attributes:
        refit: FoldPlan or None. The chosen point to refit on the outer training split.
        record: dict or None. For `select: outer`, the chosen fit's record: the fold's result.
        tuning: Tuning. The tuning columns of the fold's row.
        error: str. Why the grid could not be scored (the fold fails); empty otherwise.
    """

    refit: Optional[FoldPlan]
    record: Optional[dict]
    tuning: Tuning
    error: str = ""


def decide(config: ExperimentConfig, plan: FoldPlan, fits: list[tuple[int, dict | None]]) -> Decision:
    """What an outer fold of a tuned strategy does with its grid fits (`fits`: (point index, record or None)).

    Returns:
        Decision: a refit of the chosen point; for `select: outer` the chosen fit's record
        (that fit trained on the outer fold and is its result); or, when no grid point had
        every fit finish, an error: the fold is failed, and a rerun retries the missing fits.
    """
    name = plan.strategy
    choice = choose(config, name, fits)
    if choice.best is not None and config.strategies[name].tune.select == "outer":
        # one fit per point, in grid order: the chosen fit is the fold's result, the others its tuning cost
        others = [fit for index, fit in enumerate(fits) if index != choice.best]
        return Decision(None, fits[choice.best][1], tuning_columns(config, name, choice, others))
    tuning = tuning_columns(config, name, choice, fits)
    if choice.best is None and any(choice.scored):
        return Decision(None, None, tuning, error=(
            f"tuning failed: every grid point of {len(choice.means)} diverged in at least one inner fit "
            f"(no finite tune.metric); give the grid values that train"))
    if choice.best is None:
        return Decision(None, None, tuning, error=(
            f"tuning failed: no grid point of {len(choice.means)} had every fit finish "
            f"({choice.failed_fits} of {len(fits)} grid fits failed); rerun to retry them"))
    return Decision(tuned_plan(config, plan, choice.best), None, tuning)
