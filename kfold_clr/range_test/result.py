"""The outcome of an LR range test: its per-iteration history and the bounds read from it."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import numpy as np

import kfold_clr.range_test.smoothing as smoothing_lib
from kfold_clr.range_test.suggest import (
    SUGGESTION_METHODS,
    RangeTestInconclusive,
    check_method,
    is_higher_better,
    suggest,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from kfold_clr.range_test.suggest import Suggestion

REQUIRED_COLUMNS = ("iteration", "lr", "loss")
MEMORISING_EPOCHS = 10
"""Passes over the same rows past which a curve that never turns up is likely memorisation."""


def _yaml_float(value: float) -> str:
    """A float written so that YAML 1.1 (PyYAML) reads it back as a float: `1.0e-05`, not `1e-05`."""
    text = f"{value:.3g}"
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


class RangeTestResult:
    """History of an LR range test, with the settings that produced it.

    Attributes:
        history: pandas DataFrame, one row per iteration: `iteration`, `lr`,
            `loss`, `smoothed_loss`, `<metric>` and `smoothed_<metric>` for each
            compiled metric, `holdout_loss` and `holdout_<metric>` when a
            holdout set was evaluated (NaN between evaluations), and `used`,
            False from the point where the test diverged on.
        settings: Dict. The arguments of `lr_range_test`, resolved (e.g. the
            number of iterations, the window).
        monitor: String. The column the suggestions read.
        diverged: Bool, read from `used`. Whether the test stopped because the loss diverged.
        diverged_at_lr: Float or None, read from `used`. Learning rate at the divergence.

    With `smoothing="window"`, `smoothed_*` columns repeat each window's mean
    over the rows of that window; the suggestions use one point per window,
    at the window's mean LR.
    """

    def __init__(self, history: pd.DataFrame, settings: dict[str, Any], *, monitor: str | None = None) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in history.columns]
        if missing:
            raise ValueError(f"A range-test history needs the columns {list(REQUIRED_COLUMNS)}; missing {missing}")
        history = history.reset_index(drop=True)
        if "used" not in history.columns:
            history["used"] = True
        history["used"] = history["used"].astype(bool)
        self.history = history
        self.settings = dict(settings)
        self.monitor = monitor or self.settings.get("monitor", "loss")
        if self.monitor not in self.history.columns or self.monitor in ("iteration", "lr", "used"):
            raise ValueError(
                f"Argument `monitor` must be one of {self.monitor_names}. Received: monitor={self.monitor!r}"
            )

    @classmethod
    def from_frame(cls, df: pd.DataFrame, settings: dict[str, Any]) -> RangeTestResult:
        """Rebuilds a result from its history (e.g. read from `range_test.csv`) and settings.

        Args:
            df: pandas DataFrame with at least `iteration`, `lr`, `loss`; `used`
                defaults to True; extra columns (such as `scope`) are kept.
            settings: Dict. The range-test settings (`monitor`, `smoothing`,
                `beta`, `window`, `mode`, `method`); missing ones take the
                defaults of `lr_range_test`.

        Returns:
            A `RangeTestResult`.
        """
        return cls(df.copy(), settings)

    # ------------------------------------------------------------ reading

    @property
    def monitor_names(self) -> list[str]:
        """Columns that can be monitored: the loss, the metrics and the holdout ones."""
        skip = {"iteration", "lr", "used", "scope"}
        return [c for c in self.history.columns if c not in skip and not c.startswith("smoothed_")]

    @property
    def diverged(self) -> bool:
        """Whether the test diverged: some rows are not used."""
        return not self.history["used"].all()

    @property
    def diverged_at_lr(self) -> float | None:
        """Learning rate of the first unused row (where the test diverged), or None."""
        unused = self.history.loc[~self.history["used"], "lr"]
        return float(unused.iloc[0]) if len(unused) else None

    @property
    def higher_is_better(self) -> bool:
        return is_higher_better(self.monitor)

    @functools.cached_property
    def turned_up(self) -> bool:
        """Whether the sweep saw the top of the useful LR range.

        True when the test diverged, or when the smoothed monitored curve (turned
        lower-is-better) has its best point before the last 10% of the sweep and
        ends clearly above it: by 10% of the best value's size and by half the
        curve's drop from its start, so batch noise on a flat curve does not count.
        Otherwise the curve was still improving (or flat) at `max_lr`: the upper
        bound is unknown.
        """
        if self.diverged:
            return True
        _, values = self.curve()
        if len(values) < 3:
            return False
        v = -values if self.higher_is_better else values
        start = float(np.median(v[:max(1, len(v) // 10)]))
        best = int(np.argmin(v))
        rise = float(v[-1] - v[best])
        return (best < 0.9 * (len(v) - 1) and rise >= 0.1 * max(abs(float(v[best])), 1e-12)
                and rise >= 0.5 * (start - float(v[best])))

    @property
    def next_max_lr(self) -> float | None:
        """The `max_lr` to try next when the curve did not turn up (10x the sweep's), else None."""
        return None if self.turned_up else float(self.settings.get("max_lr", self.history["lr"].max())) * 10

    def describe_sweep(self) -> str:
        """How long the sweep was: "100 updates (2.2 epochs of 45 batches of 32 rows)", and where
        it stopped when the loss diverged."""
        planned = int(self.settings.get("iterations") or len(self.history))
        text = f"{planned} updates"
        epochs = self.sweep_epochs()
        if epochs is not None:
            batches = round(planned / epochs)
            text += f" ({epochs:.2g} epochs of {batches} batches of {self.settings['batch_size']} rows)"
        if self.diverged:
            text += f", stopped where the loss diverged after {int(self.history['used'].sum())}"
        return text

    def top_note(self) -> str:
        """A sentence saying that the curve never turned up, and what to try, or ""."""
        if self.turned_up:
            return ""
        top = float(self.history["lr"].max())
        note = (f"the smoothed {self.monitor} had not turned up by the end of the sweep (lr={top:.3g}): the "
                f"useful range may go higher, so max_lr is a lower estimate; try range_test.max_lr: "
                f"{_yaml_float(self.next_max_lr)}")
        epochs = self.sweep_epochs()
        if epochs is not None and epochs > MEMORISING_EPOCHS:
            note += (f" (the sweep went {epochs:.0f} times through its {int(self.settings['n_train'])} rows: a "
                     "sample that small can be learnt by heart, and then no LR raises the loss; give the range "
                     "test more rows, e.g. a larger range_test.reserve where one is set)")
        return note

    def sweep_epochs(self) -> float | None:
        """How many passes over its training rows the sweep planned, or None when unknown."""
        planned = self.settings.get("iterations") or len(self.history)
        n_train, batch = self.settings.get("n_train"), self.settings.get("batch_size")
        if not (n_train and batch):
            return None
        return int(planned) / -(-int(n_train) // int(batch))

    def curve(self, monitor: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The curve the suggestions read: smoothed, cut at the divergence.

        Training quantities are smoothed with the test's rule from their raw
        values; holdout quantities, already means over a whole set, are taken
        as they are at the iterations where they were evaluated.

        Args:
            monitor: String or None. Column to read; default: `self.monitor`.

        Returns:
            A tuple `(lrs, values)` of float64 arrays.
        """
        monitor = monitor or self.monitor
        if monitor not in self.monitor_names:
            raise ValueError(f"Argument `monitor` must be one of {self.monitor_names}. Received: monitor={monitor!r}")
        rows = self.history[self.history["used"]]
        lrs = rows["lr"].to_numpy(dtype="float64")
        values = rows[monitor].to_numpy(dtype="float64")
        if monitor.startswith("holdout_"):
            keep = np.isfinite(values)
            return lrs[keep], values[keep]
        return smoothing_lib.smooth_curve(
            lrs,
            values,
            smoothing=self.settings.get("smoothing", "ema"),
            beta=self.settings.get("beta", 0.98),
            window=self.settings.get("window"),
            mode=self.settings.get("mode", "exponential"),
        )

    def suggest(self, method: str | None = None) -> Suggestion:
        """Bounds read from the monitored curve.

        Args:
            method: String or None. A key of `SUGGESTION_METHODS`; default: the
                `method` given to `lr_range_test`.

        Returns:
            A `Suggestion`.

        Raises:
            RangeTestInconclusive: the curve does not support the method.
        """
        method = method or self.settings.get("method", "regime")
        check_method(method)
        lrs, values = self.curve()
        return suggest(lrs, values, method=method, higher_is_better=self.higher_is_better)

    def _try_suggest(self, method: str | None = None) -> tuple[Suggestion | None, RangeTestInconclusive | None]:
        try:
            return self.suggest(method), None
        except RangeTestInconclusive as error:
            return None, error

    def summary(self) -> str:
        """Human-readable suggestion lines, one per conclusive method, the chosen one first."""
        chosen = self.settings.get("method", "regime")
        lines = []
        for method in [chosen, *(m for m in SUGGESTION_METHODS if m != chosen)]:
            suggestion, _ = self._try_suggest(method)
            if suggestion is not None:
                lines.append(str(suggestion))
        if not lines:
            _, error = self._try_suggest(chosen)
            lines.append(f"no suggestion: {error}")
        if self.diverged:
            lines.append(f"(diverged at lr={self.diverged_at_lr:.3g}; later points not used)")
        note = self.top_note()
        if note:
            lines.append(f"warning: {note}")
        return "\n".join(lines)

    def yaml_snippet(self, suggestion: Suggestion | None = None) -> str:
        """`base_lr: ...` and `max_lr: ...` lines, ready to paste into a strategy.

        Args:
            suggestion: `Suggestion` or None. Default: `self.suggest()`.

        Returns:
            String of two lines, the numbers with 3 significant digits.
        """
        suggestion = suggestion or self.suggest()
        return f"base_lr: {_yaml_float(suggestion.base_lr)}\nmax_lr: {_yaml_float(suggestion.max_lr)}\n"

    # ------------------------------------------------------------ writing

    def to_csv(self, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
        """Writes the history to a CSV file (no index column), with `turned_up` and
        `next_max_lr` (the max_lr to try next, empty when the curve turned up) on every row."""
        from kfold_clr.storage.store import write_csv

        write_csv(path, self.history.assign(turned_up=self.turned_up, next_max_lr=self.next_max_lr))
        return path

    def plot(self, *, suggestion: Suggestion | None = None, ax: Axes | None = None) -> Axes:
        """Draws the monitored curve (see `kfold_clr.plots.range_test.plot_range_test`)."""
        from kfold_clr.plots.range_test import plot_range_test

        return plot_range_test(self.history, monitor=self.monitor, suggestion=suggestion, ax=ax)

    def save(self, directory: str | os.PathLike[str], *, method: str | None = None) -> dict[str, str]:
        """Writes `range_test.csv` and `range_test.png` into `directory`.

        The plot shows the suggested bounds when the method is conclusive, and
        says why not otherwise.

        Args:
            directory: Path. Created if needed.
            method: String or None. Suggestion method; default: the test's.

        Returns:
            Dict `{"csv": path, "plot": path}`.
        """
        from kfold_clr.plots.range_test import never_turned_up_title, save_range_test_plot

        os.makedirs(directory, exist_ok=True)
        paths = {
            "csv": os.path.join(directory, "range_test.csv"),
            "plot": os.path.join(directory, "range_test.png"),
        }
        self.to_csv(paths["csv"])
        suggestion, error = self._try_suggest(method)
        title = str(suggestion) if suggestion else f"inconclusive: {error}"
        if not self.turned_up:
            title += "\n" + never_turned_up_title(float(self.history["lr"].max()), self.next_max_lr)
        save_range_test_plot(self.history, paths["plot"], monitor=self.monitor, suggestion=suggestion, title=title)
        return paths

    def __repr__(self) -> str:
        return (
            f"RangeTestResult(iterations={len(self.history)}, monitor={self.monitor!r}, "
            f"diverged={self.diverged}, diverged_at_lr={self.diverged_at_lr})"
        )
