"""One fold's record: its typed `folds.csv` row (`FoldRow`), history rows and LR trace, built here only.

A record is the plain dict the trainers return and the store saves as JSON: `row` (the
`folds.csv` row, `FoldRow.as_dict()`), `history` (one row per epoch), `lr` (the subsampled LR
trace) and, beside them, `predictions` and `weights` (saved in their own files). Every kind of
row comes from here: a trained fold (`trained_record`), a failed one (`failed_record`); what a
carry chain, a fused job, a snapshot ensemble, tuning and the optimism check add is set with
`update_row`, through the row's typed fields, as scikit-learn's `_fit_and_score` returns one
dict shape for every fit.

The columns of `folds.csv` are the keys of `FoldRow.as_dict()`, in this order::

    strategy repeat fold seed status error n_train n_val epochs iterations fit_seconds
    job_seconds job_folds initial_step [base_lr max_lr final_lr] diverged
    [diverged_epoch diverged_lr] leaky optimistic train_* val_*
    [n_snapshots snapshot_iterations snapshot_val_*] [carried_from restarted_after] [fused]
    [tuned_* tune_select ... tune_seconds] [optimistic_reason]

(bracketed groups only where they apply: a failed fold trained nothing, so it has no LR or
divergence columns.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from kfold_clr.training.fold_plans import FoldPlan, FoldSpec

LR_TRACE_POINTS = 100
_STATUSES = ("ok", "diverged", "failed")
_TRAINED_ONLY = ("base_lr", "max_lr", "final_lr", "diverged_epoch", "diverged_lr")


@dataclasses.dataclass(frozen=True)
class Snapshots:
    """A snapshot ensemble's columns: how many cycle-end snapshots were kept, after which updates,
    and the ensemble's validation scores (empty when it was not scored: none kept, or diverged)."""

    count: int
    iterations: tuple = ()
    val_scores: dict = dataclasses.field(default_factory=dict)

    def columns(self) -> dict:
        return {"n_snapshots": self.count, "snapshot_iterations": " ".join(map(str, self.iterations)),
                **_prefixed("snapshot_val_", self.val_scores)}


@dataclasses.dataclass(frozen=True)
class Tuning:
    """A tuned strategy's columns: the chosen grid values (`tuned_*`, empty when no point won)
    and what scoring the grid took (`kfold_clr.training.tuning.tuning_columns`)."""

    values: dict
    select: str
    points: int
    fits: int
    failed_fits: int
    unscored_points: int
    score: float
    iterations: int
    seconds: float

    def columns(self) -> dict:
        return {**_prefixed("tuned_", self.values), "tune_select": self.select, "tune_points": self.points,
                "tune_fits": self.fits, "tune_failed_fits": self.failed_fits,
                "tune_unscored_points": self.unscored_points, "tune_score": self.score,
                "tune_iterations": self.iterations, "tune_seconds": self.seconds}


_TUNING_FIELDS = {f"tune_{field.name}": field.name for field in dataclasses.fields(Tuning) if field.name != "values"}


@dataclasses.dataclass(frozen=True)
class FoldRow:
    """One `folds.csv` row: a fold of one strategy, trained (ok or diverged) or failed.

    Attributes:
        status: str. "ok", "diverged" (its loss became NaN or infinite) or "failed" (it raised).
        train, val: dict. Scores of the final weights by metric name (`train_loss`, `val_accuracy`, ...).
        snapshots: Snapshots or None. Only for strategies that keep snapshots.
        carried_from, restarted_after: str or None. Only for carry chains: the fold whose weights
            this one started from, and the diverged fold after which the chain started again ("" for none).
        fused: bool or None. Whether the fold trained in a fused job (set when its job ends).
        tuning: Tuning or None. Only for the outer folds of tuned strategies.
        optimistic_reason: str or None. Why `optimistic` (set when the fold lands; "" for none).
        extra: dict. Columns of a saved row that this version does not name, kept as they were.
    """

    strategy: str
    repeat: int
    fold: int
    seed: int
    status: str
    n_train: int
    n_val: int
    initial_step: int
    leaky: bool
    error: str = ""
    epochs: int = 0
    iterations: int = 0
    fit_seconds: float = 0.0
    job_seconds: float = 0.0
    job_folds: int = 1
    base_lr: Optional[float] = None
    max_lr: Optional[float] = None
    final_lr: Optional[float] = None
    diverged_epoch: Optional[int] = None
    diverged_lr: Optional[float] = None
    optimistic: bool = False
    train: dict = dataclasses.field(default_factory=dict)
    val: dict = dataclasses.field(default_factory=dict)
    snapshots: Optional[Snapshots] = None
    carried_from: Optional[str] = None
    restarted_after: Optional[str] = None
    fused: Optional[bool] = None
    tuning: Optional[Tuning] = None
    optimistic_reason: Optional[str] = None
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"FoldRow: status must be one of {', '.join(_STATUSES)}. Received: {self.status!r}")

    def as_dict(self) -> dict:
        """The `folds.csv` row, its columns in the order of the module docstring."""
        row = {name: getattr(self, name) for name in ("strategy", "repeat", "fold", "seed", "status", "error",
                                                      "n_train", "n_val", "epochs", "iterations", "fit_seconds",
                                                      "job_seconds", "job_folds", "initial_step")}
        trained = self.status != "failed"
        if trained:
            row.update(base_lr=self.base_lr, max_lr=self.max_lr, final_lr=self.final_lr)
        row["diverged"] = self.status == "diverged"
        if trained:
            row.update(diverged_epoch=self.diverged_epoch, diverged_lr=self.diverged_lr)
        row.update(leaky=self.leaky, optimistic=self.optimistic, **_prefixed("train_", self.train),
                   **_prefixed("val_", self.val))
        if self.snapshots is not None:
            row.update(self.snapshots.columns())
        if self.carried_from is not None:
            row.update(carried_from=self.carried_from, restarted_after=self.restarted_after)
        if self.fused is not None:
            row["fused"] = self.fused
        if self.tuning is not None:
            row.update(self.tuning.columns())
        if self.optimistic_reason is not None:
            row["optimistic_reason"] = self.optimistic_reason
        return {**row, **self.extra}

    @classmethod
    def from_dict(cls, row: dict) -> FoldRow:
        """The row back from `as_dict()` output (a saved record's `row`): `from_dict(r).as_dict() == r`.
        A field the row lacks (a row written by hand, or by an older version) reads as None."""
        known = {field.name for field in dataclasses.fields(cls)} - {"train", "val", "snapshots", "tuning", "extra"}
        fields = {field.name: None for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING
                  and field.default_factory is dataclasses.MISSING}
        scores = {"train": {}, "val": {}, "snapshot": {}, "tuned": {}}
        tuning, extra = {}, {}
        for key, value in row.items():
            if key in known:
                fields[key] = value
            elif key in _TUNING_FIELDS:
                tuning[_TUNING_FIELDS[key]] = value
            elif key.startswith(("train_", "val_", "snapshot_val_", "tuned_")):
                group, name = ("snapshot", key[len("snapshot_val_"):]) if key.startswith("snapshot_val_") \
                    else key.split("_", 1)
                scores[group][name] = value
            elif key not in ("diverged", "n_snapshots", "snapshot_iterations"):
                extra[key] = value
        if "n_snapshots" in row:
            iterations = tuple(int(step) for step in str(row.get("snapshot_iterations") or "").split())
            fields["snapshots"] = Snapshots(row["n_snapshots"], iterations, scores["snapshot"])
        if tuning:
            fields["tuning"] = Tuning(values=scores["tuned"], **tuning)
        return cls(**fields, train=scores["train"], val=scores["val"], extra=extra)


def _prefixed(prefix: str, values: dict) -> dict:
    return {f"{prefix}{name}": value for name, value in values.items()}


def update_row(record: dict, **changes: Any) -> dict:
    """Set fields of `record`'s row (FoldRow names: `fused=True`, `tuning=...`); returns the record.

    Raises:
        TypeError: a name that is not a FoldRow field.
    """
    record["row"] = dataclasses.replace(FoldRow.from_dict(record["row"]), **changes).as_dict()
    return record


def failed_record(plan: FoldPlan, error: str) -> dict:
    """The record of a fold that raised (or could not start) instead of finishing: no history, no trace."""
    row = FoldRow(plan.strategy, plan.split.repeat, plan.split.fold, plan.seed, "failed", len(plan.split.train),
                  len(plan.split.val), plan.initial_step, leaky=plan.carry_from is not None, error=error)
    return {"row": row.as_dict(), "history": [], "lr": []}


def epoch_lr(lrs: Sequence[float] | np.ndarray, epoch: int, steps_per_epoch: int) -> float:
    """The LR of the last update of `epoch` (1-based): the one in force when it ended."""
    last = min(epoch * steps_per_epoch, len(lrs)) - 1
    return float(lrs[max(last, 0)])


def trained_record(spec: FoldSpec, *, iterations: int, lrs: Sequence[float] | np.ndarray, fit_seconds: float,
                   diverged_epoch: int | None, train_scores: dict[str, float] | None,
                   val_scores: dict[str, float] | None, epoch_logs: Sequence[dict], job_seconds: float | None = None,
                   job_folds: int = 1) -> dict:
    """The record of one trained fold (ok or diverged): its `folds.csv` row, history rows and LR trace.

    Args:
        spec: FoldSpec. The fold and the bounds it used.
        iterations: int. Updates applied.
        lrs: array. The LR of every update applied (at least one value).
        fit_seconds: float. Training time: this fold's share of its job's time
            (`job_seconds / job_folds`).
        diverged_epoch: int or None. Epoch whose loss became NaN or infinite.
        train_scores, val_scores: dict name -> value of the final weights, or None (diverged).
        epoch_logs: list of dict. Keras's logs of every epoch.
        job_seconds: float or None. Wall time of the job that trained this fold, with the
            folds fused with it (None: `fit_seconds`, a job of one fold).
        job_folds: int. How many folds shared that job's time (1 when trained alone).

    `optimistic` is left False here: the runner decides it from the whole experiment
    (early stopping, range tests that saw validation rows).
    """
    plan, lr_info = spec.plan, spec.lr_info
    diverged = diverged_epoch is not None
    row = FoldRow(
        plan.strategy, plan.split.repeat, plan.split.fold, plan.seed, "diverged" if diverged else "ok",
        len(plan.split.train), len(plan.split.val), plan.initial_step, leaky=plan.carry_from is not None,
        epochs=len(epoch_logs), iterations=int(iterations), fit_seconds=round(fit_seconds, 4),
        job_seconds=round(fit_seconds if job_seconds is None else job_seconds, 4), job_folds=int(job_folds),
        base_lr=lr_info["base_lr"], max_lr=lr_info["max_lr"], final_lr=float(lrs[-1]),
        diverged_epoch=diverged_epoch, diverged_lr=float(lrs[-1]) if diverged else None,
        train={"loss": math.nan} if diverged else dict(train_scores), val={} if diverged else dict(val_scores))
    where = {"strategy": plan.strategy, "repeat": plan.split.repeat, "fold": plan.split.fold}
    history = [{**where, "epoch": index + 1, "lr": epoch_lr(lrs, index + 1, plan.steps_per_epoch), **logs}
               for index, logs in enumerate(epoch_logs)]
    trace = [{**where, "iteration": int(i), "global_iteration": int(plan.initial_step + i), "lr": float(lrs[i])}
             for i in _subsample(len(lrs))]
    return {"row": row.as_dict(), "history": history, "lr": trace}


def _subsample(n: int, points: int = LR_TRACE_POINTS) -> np.ndarray:
    if n <= points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, points).round().astype(int))
