"""Range-test bounds for the strategies that ask for them (`bounds: *_range_test`).

One shared range test (on the reserved rows, or else on the first split's training
rows) or one inside each fold's training split; each is run once, saved in the results
directory and reloaded on resume. A fold whose range test gave no bounds gets a
`BoundsUnavailable` value instead, and is recorded as failed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from kfold_clr.data.splits import Split
from kfold_clr.errors import ConfigError, KfoldClrError
from kfold_clr.storage import provenance
from kfold_clr.storage.provenance import fingerprint
from kfold_clr.training.fold_plans import FoldPlan, uses_range_test
from kfold_clr.training.range_test_plans import range_test_plan, range_test_settings

if TYPE_CHECKING:
    from kfold_clr.config import ExperimentConfig
    from kfold_clr.config.strategy_base import BaseStrategy
    from kfold_clr.data.datasets import Dataset
    from kfold_clr.range_test import RangeTestResult
    from kfold_clr.storage.store import ResultsStore


def range_test_on_split(config: ExperimentConfig, dataset: Dataset, plan: FoldPlan) -> RangeTestResult:
    """Run the configured LR range test on one split's training data (weights restored after)."""
    from kfold_clr.config.optimizers import make_optimizer
    from kfold_clr.range_test import lr_range_test
    from kfold_clr.training.models import compile_model
    from kfold_clr.training.trainer import initial_model, prepare_fold

    x_train, y_train, _, _ = prepare_fold(dataset, plan.split, config.data)
    model = initial_model(config, dataset, plan, x_train.shape[1:])
    compile_model(model, make_optimizer(config.training.optimizer, config.range_test.min_lr),
                  loss=config.training.loss, metrics=config.training.metrics)
    try:
        return lr_range_test(model, x_train, y_train, **range_test_settings(config, plan))
    except ValueError as error:
        raise ConfigError(f"range_test: {error}") from None


class RangeTestBounds:
    """Runs (or reloads) the range tests that `bounds: *_range_test` strategies use.

    The shared range test runs on the reserved rows (`range_test.reserve`), or else on
    the first split's training rows, which are validation rows of the other folds:
    `rows_seen` tells which rows chose a fold's bounds, so that overlap can be flagged.
    Saved range tests are keyed by the run's fold dependencies (`dependencies`, from
    `provenance.run_fingerprints`; computed here when not given) and the `range_test` section.
    """

    def __init__(self, config: ExperimentConfig, dataset: Dataset, splits: list[Split], store: ResultsStore,
                 log: Callable[[str], None], reserved: np.ndarray | None = None,
                 warn: Callable[[str], None] | None = None, *, dependencies: dict | None = None) -> None:
        self.config, self.dataset, self.store, self.log = config, dataset, store, log
        self.warn = warn or log
        if dependencies is None:
            dependencies = provenance.fold_dependencies(config, dataset)
        self.fingerprint = fingerprint({**dependencies, "range_test": config.range_test.model_dump(mode="json")})
        self._shared_split = (Split(0, 0, reserved, reserved[:0]) if reserved is not None else splits[0])
        self._bounds = {}  # scope -> saved payload, read or run once

    def rows_seen(self, strategy_cfg: BaseStrategy, plan: FoldPlan) -> np.ndarray:
        """The rows whose data chose this fold's bounds (empty for fixed bounds)."""
        kind = uses_range_test(strategy_cfg)
        if kind is None:
            return np.array([], dtype=int)
        return self._shared_split.train if kind == "shared_range_test" else plan.split.train

    def bounds(self, strategy_cfg: BaseStrategy, plan: FoldPlan) -> tuple[float, float]:
        """(base_lr, max_lr) for a fold of a `*_range_test` strategy; RangeTestFailed if none."""
        shared = strategy_cfg.bounds == "shared_range_test"
        scope, split = ("shared", self._shared_split) if shared else (plan.split.key, plan.split)
        if scope not in self._bounds:
            saved = self.store.load_range_test(scope, self.fingerprint)
            self._bounds[scope] = saved if saved is not None else self._run(scope, split)
        saved = self._bounds[scope]
        if saved.get("error"):
            raise RangeTestFailed(f"range test ({scope}): {saved['error']}")
        return saved["base_lr"], saved["max_lr"]

    def prefetch(self, splits: list[Split], *, group_size: int) -> None:
        """Run the per-fold range tests of these splits that are not saved yet as fused sweeps of at
        most `group_size` folds (the fold-by-fold range test where a fused one cannot run)."""
        from kfold_clr.training.fused.range_tests import fused_range_tests
        from kfold_clr.training.trainer import PreparedFolds

        missing = []
        for split in {split.key: split for split in splits}.values():
            if split.key not in self._bounds:
                saved = self.store.load_range_test(split.key, self.fingerprint)
                if saved is not None:
                    self._bounds[split.key] = saved
                else:
                    missing.append(split)
        if len(missing) < 2 or self.config.range_test.holdout is not None:
            return
        fold_data = PreparedFolds(self.dataset, missing, self.config.data)
        alike = {}  # folds whose sweeps have the same length and smoothing run together
        for split in missing:
            settings = range_test_settings(self.config, range_test_plan(self.config, split))
            alike.setdefault((settings["iterations"], settings["beta"]), []).append(split)
        size = max(1, group_size)
        for similar in alike.values():
            for group in (similar[start:start + size] for start in range(0, len(similar), size)):
                if len(group) < 2:
                    continue  # one fold: its ordinary range test, when a strategy asks for it
                started = time.perf_counter()
                try:
                    results = fused_range_tests(self.config, self.dataset,
                                                [range_test_plan(self.config, s) for s in group], fold_data)
                except (KeyboardInterrupt, KfoldClrError):
                    raise
                except Exception as error:  # noqa: BLE001 - the folds' own range tests run instead
                    self.warn(f"fused range tests failed ({type(error).__name__}: {error}); "
                              "running them fold by fold")
                    continue
                seconds = (time.perf_counter() - started) / len(group)
                for split, result in zip(group, results):
                    self._bounds[split.key] = self._save(split.key, result, seconds, fused=True)

    def _run(self, scope, split):
        started = time.perf_counter()
        result = range_test_on_split(self.config, self.dataset, range_test_plan(self.config, split))
        return self._save(scope, result, time.perf_counter() - started)

    def _save(self, scope, result, seconds, fused=False):
        payload = {"scope": scope, "fingerprint": self.fingerprint, "versions": provenance.versions(),
                   "history": result.history.to_dict(orient="records"),
                   "iterations": int(len(result.history)), "seconds": round(float(seconds), 4), "fused": fused}
        payload.update(turned_up=result.turned_up, next_max_lr=result.next_max_lr)
        try:
            suggestion = result.suggest()
            payload.update(base_lr=float(suggestion.base_lr), max_lr=float(suggestion.max_lr),
                           method=suggestion.method)
            self.log(f"range test ({scope}, {result.describe_sweep()}{', fused' if fused else ''}): "
                     f"base_lr={suggestion.base_lr:.3g} max_lr={suggestion.max_lr:.3g} ({suggestion.method})")
        except KfoldClrError as error:
            payload.update(base_lr=None, max_lr=None, error=str(error))
        note = result.top_note()
        if note:
            self.warn(f"range test ({scope}): {note}")
        self.store.save_range_test(scope, payload)
        return payload


class RangeTestFailed(RuntimeError):
    """A range test gave no usable bounds; the folds that needed it are recorded as failed."""
