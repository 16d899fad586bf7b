"""What each strategy cost: optimizer updates and wall time on training, range tests and tuning.

A score means little without its price: "CLR with one range test, no tuning" and
"step decay tuned over 3 values x 3 inner folds" are compared on both. The cost of a
strategy is the sum of three parts, each in updates (optimizer steps) and seconds:

```
total = training (folds.csv: iterations, fit_seconds; every fold that ran)
      + range tests (range_tests/SCOPE.json: iterations, seconds; the scopes its bounds came from)
      + tuning (folds.csv: tune_iterations, tune_seconds; 0 for a strategy that is not tuned)
```

Costs are compared in updates, which measure the work whatever trained it. Seconds are
wall time, and a fold trained fused shares its job's time with the folds trained beside it
(folds.csv: ``job_seconds`` of the job, ``job_folds`` that shared it, ``fit_seconds`` the
fold's share ``job_seconds / job_folds``); a fold in a large fused job "costs" fewer seconds
than the same work in a small one, so seconds compare only strategies trained alike.
``fused_folds`` counts a strategy's folds that shared a job's time.

A range test serves every strategy whose bounds come from it: the shared test
(scope ``shared``) serves each ``bounds: shared_range_test`` strategy, and the
per-fold test of split ``rR_fF`` serves each ``bounds: per_fold_range_test``
strategy on that split. Its cost is counted in full for each strategy it serves
(it is what that strategy would cost run alone), and ``range_test_shared_with``
names the others. A part saved before its cost was recorded is NaN (unknown), and
so is the total it enters; a part that did not happen is 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kfold_clr.analysis.columns import as_bool, strategy_order

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import TypeAlias

    from kfold_clr.config.strategies import BaseStrategy

    StrategySpec: TypeAlias = BaseStrategy | Mapping[str, Any] | None  # a strategy's typed config, or a plain mapping

SHARED_SCOPE = "shared"
SHARED_RANGE_TEST = "shared_range_test"
PER_FOLD_RANGE_TEST = "per_fold_range_test"

COST_COLUMNS = [
    "train_iterations", "train_seconds", "train_iterations_per_fold", "train_seconds_per_fold",
    "range_tests", "range_test_iterations", "range_test_seconds", "range_test_shared_with",
    "tuned", "tune_iterations", "tune_seconds", "total_iterations", "total_seconds", "fused_folds",
]
RANGE_TEST_COST_COLUMNS = ["scope", "iterations", "seconds"]


def split_scope(repeat: int, fold: int) -> str:
    """The scope of the per-fold range test of split (repeat, fold): "r0_f3" (as `Split.key`)."""
    return f"r{int(repeat)}_f{int(fold)}"


def _setting(spec: StrategySpec, key: str, default: Any = None) -> Any:
    """A strategy's setting from its typed config (or a plain mapping); `default` when it has none."""
    if spec is None:
        return default
    if isinstance(spec, dict):
        return spec.get(key, default)
    return getattr(spec, key, default)


def range_test_kind(spec: StrategySpec) -> str | None:
    """'shared_range_test', 'per_fold_range_test' or None (fixed bounds) for one strategy config."""
    bounds = _setting(spec, "bounds", "fixed")
    return bounds if bounds in (SHARED_RANGE_TEST, PER_FOLD_RANGE_TEST) else None


def is_tuned(spec: StrategySpec) -> bool:
    """Whether a strategy config asks for tuning (a `tune:` entry)."""
    return _setting(spec, "tune") is not None


def _number(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def range_test_costs(payloads: Iterable[dict] = (), *, range_tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Updates and seconds of each saved range test, one row per scope.

    ``iterations`` is the payload's ``iterations``, else the number of points in its
    ``history`` (one per update), else the number of ``range_tests.csv`` rows of that
    scope; ``seconds`` is the payload's ``seconds``, else the scope's ``test_seconds`` in
    ``range_tests.csv`` (the tables travel without the payloads), else NaN (saved before
    the time was recorded).

    Args:
        payloads: iterable of dict. The saved range tests (``range_tests/*.json``), each
            with a ``scope``.
        range_tests: DataFrame or None. ``range_tests.csv`` (scope x iteration), for
            scopes without a payload.

    Returns:
        DataFrame with columns `RANGE_TEST_COST_COLUMNS`.
    """
    rows = {}
    for payload in payloads:
        scope = payload.get("scope") if isinstance(payload, dict) else None
        if not isinstance(scope, str):
            continue
        iterations = _number(payload.get("iterations"))
        history = payload.get("history")
        if math.isnan(iterations) and isinstance(history, list):
            iterations = float(len(history))
        rows[scope] = {"scope": scope, "iterations": iterations, "seconds": _number(payload.get("seconds"))}
    if range_tests is not None and "scope" in range_tests.columns:
        for scope, group in range_tests.groupby(range_tests["scope"].astype(str)):
            seconds = (pd.to_numeric(group["test_seconds"], errors="coerce").dropna()
                       if "test_seconds" in group.columns else pd.Series(dtype=float))
            rows.setdefault(scope, {"scope": scope, "iterations": float(len(group)),
                                    "seconds": float(seconds.iloc[0]) if len(seconds) else math.nan})
    return pd.DataFrame(list(rows.values()), columns=RANGE_TEST_COST_COLUMNS)


def _strict_sum(values: pd.Series) -> float:
    """The sum of a column, NaN when any value is missing (an unknown part makes an unknown total)."""
    values = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    return float(values.sum()) if np.isfinite(values).all() else math.nan


def _scopes(frame: pd.DataFrame, kind: str | None) -> list[str]:
    if kind == SHARED_RANGE_TEST:
        return [SHARED_SCOPE]
    if kind == PER_FOLD_RANGE_TEST:
        keys = frame[["repeat", "fold"]].drop_duplicates().sort_values(["repeat", "fold"])
        return [split_scope(repeat, fold) for repeat, fold in keys.itertuples(index=False)]
    return []


def _tuning(frame: pd.DataFrame, tuned: bool) -> tuple[bool, float, float]:
    """(tuned, updates, seconds) of a strategy's tuning, from its rows' tune_iterations / tune_seconds."""
    parts = [pd.to_numeric(frame[column], errors="coerce").astype(float) if column in frame.columns else None
             for column in ("tune_iterations", "tune_seconds")]
    tuned = tuned or any(part is not None and bool((part > 0).any()) for part in parts)
    if not tuned:
        return False, 0.0, 0.0
    return True, *(_strict_sum(part) if part is not None else math.nan for part in parts)


def _shared_folds(frame: pd.DataFrame) -> int:
    """How many of a strategy's folds shared their job's wall time with other folds (job_folds > 1)."""
    if "job_folds" not in frame.columns:  # saved before job_folds was recorded: fused rows shared
        return int(as_bool(frame["fused"]).sum()) if "fused" in frame.columns else 0
    return int((pd.to_numeric(frame["job_folds"], errors="coerce").fillna(1) > 1).sum())


def cost_table(folds_df: pd.DataFrame, *, strategies: Sequence[str] | None = None,
               strategy_configs: Mapping[str, StrategySpec] | None = None,
               range_tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per strategy: what its results cost, in updates and seconds, by part.

    Training counts every fold of the strategy in ``folds_df`` (diverged and failed
    folds spent their updates too). A range test's cost is counted for each strategy
    it serves (see the module docstring); ``range_tests`` is the number of range tests
    it used. Tuning is 0 unless the strategy is tuned (a ``tune:`` entry in its config,
    or positive ``tune_iterations``/``tune_seconds`` in its rows).

    Args:
        folds_df: DataFrame. Rows of ``folds.csv``; needs strategy, repeat and fold;
            uses iterations, fit_seconds, tune_iterations and tune_seconds when present.
        strategies: list of str or None. Display order (as `columns.strategy_order`).
        strategy_configs: mapping or None. Strategy name -> its config (typed or a dict),
            read for ``bounds`` and ``tune``; None: no strategy used a range test or tuning.
        range_tests: DataFrame or None. `range_test_costs` of the saved range tests.

    Returns:
        DataFrame with columns ["strategy", *`COST_COLUMNS`].
    """
    configs = dict(strategy_configs or {})
    tests = (range_tests if range_tests is not None else range_test_costs()).drop_duplicates("scope", keep="last")
    tests = tests.set_index("scope")
    order = strategy_order(folds_df, strategies)
    names = folds_df["strategy"].astype(str)
    scopes = {name: _scopes(folds_df[names == name], range_test_kind(configs.get(name))) for name in order}
    rows = []
    for name in order:
        frame = folds_df[names == name]
        n = len(frame)
        train_iterations = _strict_sum(frame["iterations"]) if "iterations" in frame else math.nan
        train_seconds = _strict_sum(frame["fit_seconds"]) if "fit_seconds" in frame else math.nan
        own = scopes[name]
        saved = all(scope in tests.index for scope in own)  # a scope without a saved test: cost unknown
        test_iterations = _strict_sum(tests.loc[own, "iterations"]) if saved else math.nan
        test_seconds = _strict_sum(tests.loc[own, "seconds"]) if saved else math.nan
        shared_with = [other for other in order if other != name and set(own) & set(scopes[other])]
        tuned, tune_iterations, tune_seconds = _tuning(frame, is_tuned(configs.get(name)))
        rows.append({
            "strategy": name,
            "train_iterations": train_iterations,
            "train_seconds": train_seconds,
            "train_iterations_per_fold": train_iterations / n if n else math.nan,
            "train_seconds_per_fold": train_seconds / n if n else math.nan,
            "range_tests": len(own),
            "range_test_iterations": test_iterations,
            "range_test_seconds": test_seconds,
            "range_test_shared_with": "; ".join(shared_with),
            "tuned": tuned,
            "tune_iterations": tune_iterations,
            "tune_seconds": tune_seconds,
            "total_iterations": train_iterations + test_iterations + tune_iterations,
            "total_seconds": train_seconds + test_seconds + tune_seconds,
            "fused_folds": _shared_folds(frame),
        })
    return pd.DataFrame(rows, columns=["strategy", *COST_COLUMNS])
