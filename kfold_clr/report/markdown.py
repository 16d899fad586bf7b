"""The Markdown of ``report.md``: cell formatting, tables and the report's sections.

Owns number formatting (`fmt`: 4 significant digits, NaN as "n/a"),
`markdown_table`, and one function per section, each given the typed
`ExperimentConfig` and the fold records: the settings (only the model settings
that apply to the model built), the strategies with their fold outcomes, the
flags for leaky, optimistic, restarted, diverged and failed folds, the
range-test bounds, the summary (scores beside their cost) and comparison tables,
`key_comparison_markdown` (also the README's table) and the caution appended
to a verdict. Nothing here reads or writes files.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import pandas as pd

from kfold_clr.analysis import tables, verdicts
from kfold_clr.report.reading import one_line
from kfold_clr.storage import provenance

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import numpy as np

    from kfold_clr.analysis.verdicts import ComparisonRow
    from kfold_clr.config import ExperimentConfig, ModelConfig

LEAKY_TEXT = "validation fold trained on before: carried weights; scores are optimistic"
OPTIMISTIC_TEXT = "the validation fold helped choose the training; scores are optimistic"
RANGE_TEST_ADVICE = ("set range_test.reserve (e.g. 0.2) to run the shared range test on rows set aside from "
                     "every fold")
_LAYERS = ("kind", "hidden", "activation", "dropout", "batch_norm")
MODEL_SETTINGS = {"mlp": _LAYERS, "cnn": (*_LAYERS, "filters", "kernel_size"),
                  "pretrained": (*_LAYERS, "backbone", "weights", "trainable", "pooling", "params")}
# (the model keys each kind builds from)
FACTORY_SETTINGS = ("factory", "params")
RANGE_TEST_BOUNDS = {"shared_range_test": "one shared test", "per_fold_range_test": "one test per fold"}


# ---------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}"
    if hasattr(value, "item"):
        return fmt(value.item(), digits)
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table from a header and rows of cells (any values).

    Args:
        header: list of str. Column titles.
        rows: list of lists. Cells, formatted with 4 significant digits; NaN as "n/a".

    Returns:
        str, ending with a newline.
    """

    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else fmt(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(title) for title in header) + " |",
             "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _interval(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"{fmt(low)} to {fmt(high)}"


def _range(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "n/a"
    low, high = float(values.min()), float(values.max())
    return f"{low:.3g}" if math.isclose(low, high) else f"{low:.3g} to {high:.3g}"


def _spread(values: pd.Series) -> str:
    if values.empty:
        return "n/a"
    return f"{values.min():.3g} / {values.median():.3g} / {values.max():.3g}"


def _text(value: Any) -> str:
    """A text cell: "" for NaN or None (empty CSV cells read back as NaN)."""
    return value if isinstance(value, str) else ""


def _mapping_text(mapping: Mapping[str, Any] | None) -> str:
    """`key=value` pairs, leaving out unset (None or empty) entries."""
    shown = {key: value for key, value in (mapping or {}).items() if value not in (None, {}, [])}
    return ", ".join(f"{key}={value}" for key, value in shown.items()) if shown else "n/a"


def _pairs_text(reference: str | None, pairs: Sequence[tuple[str, str]] | None) -> str:
    if pairs:
        return "the pairs " + ", ".join(f"{a} vs {b}" for a, b in pairs)
    return f"each strategy vs {reference}" if reference else "every pair of strategies"


# ---------------------------------------------------------------- sections


def _model_text(model: ModelConfig) -> str:
    """The model settings that apply: the layers of an MLP or CNN, or a factory and its params."""
    keys = FACTORY_SETTINGS if model.factory is not None else MODEL_SETTINGS[model.kind]
    settings = model.model_dump()
    return _mapping_text({key: settings[key] for key in keys})


def _run_rows(meta: dict[str, Any]) -> list[list[Any]]:
    """Settings rows of the runs recorded in meta.json (one record per run, the last one current)."""
    runs = provenance.run_history(meta)
    if not runs:
        return []
    last = runs[-1]
    rows = [["runs", f"{len(runs)}; first started {runs[0].get('started', '?')}, last "
                     f"{last.get('outcome', 'finished')} at {last.get('finished') or '?'}"],
            ["versions", ", ".join(f"{name} {last[name]}" for name in provenance.TRACKED if name in last)]]
    for key in ("git_commit", "command"):
        if last.get(key) is not None and not isinstance(last[key], (dict, list)):
            rows.append([key.replace("_", " "), last[key]])
    return rows


def _path_text(config: ExperimentConfig, folds: pd.DataFrame) -> str:
    """Which training path made the rows (`fused` in folds.csv): the same numbers either way. Under
    `auto` a large run timed a few steps of each path and kept the faster (`kfold_clr.training.fused.measure`)."""
    setting = str(config.execution.fused_folds).lower()
    why = ("; auto: the faster path where a few steps of each were timed (the run's log says which and why)"
           if setting == "auto" else "")
    fused = int(tables.as_bool(folds["fused"]).sum()) if "fused" in folds.columns else 0
    if fused and fused == len(folds):
        return f"fused: all {fused} folds as one stacked model (execution.fused_folds: {setting}){why}"
    if fused:
        return f"fused: {fused} of {len(folds)} folds (execution.fused_folds: {setting}){why}"
    return f"sequential, fold by fold (execution.fused_folds: {setting}){why}"


def ropes_text(ropes: Mapping[str, float | None]) -> str:
    """Each metric's rope in words: "+-0.5 pp accuracy, none for loss (no equivalence band)"."""
    return ", ".join(f"+-{verdicts.format_difference(rope, metric, signed=False)}" if rope is not None
                     else f"none for {metric} (no equivalence band)" for metric, rope in ropes.items())


def settings_section(config: ExperimentConfig, meta: dict[str, Any], metrics: Sequence[str],
                     ropes: Mapping[str, float | None], reference: str | None,
                     pairs: Sequence[tuple[str, str]] | None, folds: pd.DataFrame) -> str:
    """The settings table: data, the model settings that apply, cross-validation, training, comparison."""
    cv, training = config.cv, config.training
    rows = [
        ["data", _mapping_text(config.data.model_dump())],
        ["model", _model_text(config.model)],
        ["cross-validation", f"{cv.splitter}, {cv.n_splits} folds x {cv.n_repeats} repeat(s) "
                             f"= {cv.n_splits * cv.n_repeats} splits, shuffle={cv.shuffle}"],
        ["epochs", training.epochs],
        ["batch size", training.batch_size],
        ["training path", _path_text(config, folds)],
        ["metrics", ", ".join(metrics)],
        ["seed", config.seed],
        ["comparison", f"{_pairs_text(reference, pairs)}; "
                       f"rope {ropes_text(ropes)}; Holm correction per metric; alpha {verdicts.ALPHA}"],
        *_run_rows(meta),
    ]
    return "## Settings\n\n" + markdown_table(["setting", "value"], [[k, str(v)] for k, v in rows])


def _failed_folds_text(failed: pd.DataFrame) -> str:
    text = "\nFailed folds:\n\n"
    for record in failed.head(20).itertuples(index=False):
        error = getattr(record, "error", "")
        error = one_line(error) if isinstance(error, str) and error.strip() else "no error recorded"
        text += f"- {record.strategy}, repeat {record.repeat}, fold {record.fold}: {error}\n"
    if len(failed) > 20:
        text += f"- ... and {len(failed) - 20} more (see folds.csv)\n"
    return text


def strategies_section(config: ExperimentConfig, folds: pd.DataFrame, status: pd.Series,
                       counts: pd.DataFrame) -> str:
    rows = []
    for name, tally in counts.iterrows():
        spec = config.strategies[name].model_dump() if name in config.strategies else {}
        frame = folds[folds["strategy"].astype(str) == name]
        settings = {key: value for key, value in spec.items() if key != "schedule"}
        rows.append([
            name, spec.get("schedule", "n/a"), _mapping_text(settings),
            _range(frame["base_lr"]) if "base_lr" in frame.columns else "n/a",
            _range(frame["max_lr"]) if "max_lr" in frame.columns else "n/a",
            int(tally[tables.OK]), int(tally[tables.DIVERGED]), int(tally[tables.FAILED]),
        ])
    header = ["strategy", "schedule", "settings", "base_lr used", "max_lr used", "ok", "diverged", "failed"]
    text = "## Strategies\n\n" + markdown_table(header, rows)
    failed = folds[(status == tables.FAILED).to_numpy()]
    return text + _failed_folds_text(failed) if len(failed) else text


def _flag_lines(folds: pd.DataFrame, name: str, tally: pd.Series) -> list[str]:
    own = (folds["strategy"].astype(str) == name).to_numpy()
    total = int(tally["total"])
    lines = []
    for column, text in (("leaky", LEAKY_TEXT), ("optimistic", OPTIMISTIC_TEXT)):
        if column in folds.columns:
            flagged = tables.as_bool(folds[column]).to_numpy() & own
            if flagged.any():
                lines.append(f"- **{name}** ({column}, {int(flagged.sum())} of {total} folds): {text}"
                             + _reasons(folds, flagged, column) + ".")
    if "restarted_after" in folds.columns:
        restarts = [key for key in folds.loc[own, "restarted_after"] if isinstance(key, str) and key]
        if restarts:
            lines.append(f"- **{name}**: the carried weights restarted from fresh initial weights after "
                         f"{len(restarts)} diverged fold(s) ({', '.join(restarts)}); the fold after each is "
                         "not leaky.")
    bad = [f"{int(tally[kind])} of {total} folds {kind}" for kind in (tables.DIVERGED, tables.FAILED) if tally[kind]]
    if bad:
        lines.append(f"- **{name}**: {' and '.join(bad)}; they are left out of the means and of the "
                     f"paired tests (a strategy that often diverges is worse than its mean suggests).")
    return lines


def flags_section(folds: pd.DataFrame, counts: pd.DataFrame) -> str:
    """Leaky, optimistic, restarted, diverged and failed folds per strategy; "" when there are none."""
    lines = [line for name, tally in counts.iterrows() for line in _flag_lines(folds, name, tally)]
    return "## Flags\n\n" + "\n".join(lines) + "\n" if lines else ""


def _reasons(folds: pd.DataFrame, flagged: np.ndarray, column: str) -> str:
    """Why rows were flagged, from the `optimistic_reason` column (one example of each reason)."""
    if column != "optimistic" or "optimistic_reason" not in folds.columns:
        return ""
    texts = [text for text in folds.loc[flagged, "optimistic_reason"] if isinstance(text, str)]
    reasons = list(dict.fromkeys(part for text in texts for part in text.split("; ") if part))
    if not reasons:
        return ""
    shown = [re.sub(r"ran on \d+ of its \d+ validation rows", "ran on some of its validation rows", reason)
             for reason in reasons]
    advice = f"; {RANGE_TEST_ADVICE}" if any(tables.RANGE_TEST_REASON in reason for reason in reasons) else ""
    return f" ({'; '.join(dict.fromkeys(shown))}){advice}"


def bounds_section(config: ExperimentConfig, folds: pd.DataFrame, status: pd.Series) -> str:
    """How the range-test bounds chose LRs: one row per strategy with range-test bounds, and
    for per-fold range tests the spread across folds ("do my folds need different LRs?")."""
    rows, spreads = [], []
    for name, spec in config.strategies.items():
        kind = spec.range_test_scope
        own = (folds["strategy"].astype(str) == name).to_numpy() & (status != tables.FAILED).to_numpy()
        if kind not in RANGE_TEST_BOUNDS or not own.any():
            continue
        frame = folds[own]
        base = pd.to_numeric(frame.get("base_lr"), errors="coerce").dropna()
        peak = pd.to_numeric(frame.get("max_lr"), errors="coerce").dropna()
        if peak.empty:
            continue
        factor = float(peak.max() / peak.min()) if peak.min() > 0 else math.nan
        rows.append([name, RANGE_TEST_BOUNDS[kind], len(frame), _spread(base), _spread(peak),
                     f"{factor:.2f}x" if math.isfinite(factor) else "n/a"])
        if kind == "per_fold_range_test":
            spreads.append((name, factor, peak))
    if not rows:
        return ""
    text = ("## LR range-test bounds\n\nBounds chosen by the range tests (min / median / max over folds) and "
            "how far apart the folds' max_lr are.\n\n"
            + markdown_table(["strategy", "range test", "folds", "base_lr", "max_lr", "max_lr spread"], rows))
    for name, factor, peak in spreads:
        verdict = ("within a factor of 2: one shared range test would pick about the same bounds"
                   if factor < 2 else "the folds disagree by more than a factor of 2: a single range test "
                   "is a rough guide here")
        text += (f"\n{name}: per-fold range tests chose max_lr from {peak.min():.3g} to {peak.max():.3g} "
                 f"({factor:.2f}x); {verdict}.\n")
    return text


def _chosen_text(values: pd.Series) -> str:
    """How often each grid value was chosen: "0.05 (9 folds), 0.1 (6 folds)"."""
    counts = pd.Series(values).dropna().value_counts(sort=False).sort_index()
    return ", ".join(f"{fmt(value)} ({count} fold{'s' if count != 1 else ''})" for value, count in counts.items())


def tuning_section(config: ExperimentConfig, folds: pd.DataFrame, status: pd.Series) -> str:
    """What the tuned strategies chose in each outer fold, how they chose it, what it cost, what failed."""
    rows, failures = [], []
    for name, spec in config.strategies.items():
        tune = spec.tune
        mine = (folds["strategy"].astype(str) == name).to_numpy()
        if tune is None or not mine.any():
            continue
        failures.extend(_tuning_failures(name, folds[mine], status[mine]))
        own = mine & (status != tables.FAILED).to_numpy()
        if not own.any():
            continue
        frame = folds[own]
        how = {"inner_cv": f"inner_cv ({tune.n_splits} inner folds)", "holdout": f"holdout ({tune.fraction:g})",
               "outer": "outer (optimistic: chosen on the validation fold)"}[tune.select]
        chosen = "; ".join(f"{key}: {_chosen_text(frame[f'tuned_{key}'])}" for key in tune.grid
                           if f"tuned_{key}" in frame.columns)
        grid = "; ".join(f"{key} in {', '.join(fmt(v) for v in values)}" for key, values in tune.grid.items())
        fits = pd.to_numeric(frame.get("tune_fits"), errors="coerce")
        updates = pd.to_numeric(frame.get("tune_iterations"), errors="coerce")
        rows.append([name, how, f"{tune.metric}", grid, chosen or "n/a",
                     fmt(float(fits.mean())) if fits.notna().any() else "n/a",
                     f"{int(updates.sum()):,}" if updates.notna().any() else "n/a"])
    if not rows and not failures:
        return ""
    text = ("## Tuned strategies\n\nEach outer fold scored the grid inside its own training split, refitted the "
            "best point on the whole split and was scored once on its validation fold; the values chosen, fold "
            "by fold, show how stable the choice is. A point is scored only when every one of its grid fits "
            "finished.\n\n")
    if rows:
        text += markdown_table(["strategy", "selection", "metric", "grid", "chosen (outer folds)",
                                "grid fits per fold (that ran)", "tuning updates"], rows)
    return text + "".join(f"\n{line}\n" for line in failures)


def _tuning_failures(name: str, frame: pd.DataFrame, status: pd.Series) -> list[str]:
    """Lines on a tuned strategy's failed grid fits, unscored points and outer folds failed for lack of a score."""
    def total(column: str) -> int:
        values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(dtype=float)
        return int(values.fillna(0).sum())

    fits, points = total("tune_failed_fits"), total("tune_unscored_points")
    errors = frame["error"].astype(str) if "error" in frame else pd.Series("", index=frame.index)
    failed_folds = int(((status == tables.FAILED).to_numpy() & errors.str.startswith("tuning failed").to_numpy()).sum())
    if not fits and not failed_folds:
        return []
    line = (f"{name}: {fits} grid fit{'s' if fits != 1 else ''} failed ({points} point{'s' if points != 1 else ''} "
            "unscored, summed over outer folds)")
    if failed_folds:
        line += (f"; {failed_folds} outer fold{'s' if failed_folds != 1 else ''} failed: no grid point had every "
                 "fit finish (rerun to retry the failed fits)")
    return [line + "."]


def _count(value: Any, decimals: int) -> str:
    value = float(value)
    if not math.isfinite(value):
        return "?"
    return f"{value:,.{decimals}f}"


def _cost_cell(record: tuple, unit: str, decimals: int) -> str:
    """"train + range test + tuning = total" of one unit (iterations or seconds) of a summary row."""
    parts = [getattr(record, f"{part}_{unit}", math.nan) for part in ("train", "range_test", "tune", "total")]
    *terms, total = (_count(value, decimals) for value in parts)
    return f"{' + '.join(terms)} = {total}"


def summary_markdown(summary: pd.DataFrame) -> str:
    rows = []
    for record in summary.itertuples(index=False):
        flags = record.flags if isinstance(record.flags, str) else ""
        rows.append([record.strategy, record.metric, record.mean, record.std,
                     _interval(record.ci95_low, record.ci95_high), int(record.n),
                     int(record.n_diverged), int(record.n_failed), record.train_mean, record.gap,
                     record.fit_seconds_mean, _cost_cell(record, "iterations", 0), _cost_cell(record, "seconds", 1),
                     flags])
    header = ["strategy", "metric", "mean", "std", "95% CI (t, over folds)", "n ok", "diverged", "failed",
              "train mean", "gap (train - val)", "fit s", "updates (train + range test + tuning)",
              "seconds (train + range test + tuning)", "flags"]
    return markdown_table(header, rows)


def comparison_markdown(comparison: pd.DataFrame) -> str:
    rows = []
    for record in comparison.itertuples(index=False):
        rows.append([record.a, record.b, record.metric, int(record.n), record.mean_diff,
                     _interval(record.ci95_low, record.ci95_high), record.t_corrected,
                     fmt(record.p_corrected, 3), fmt(record.p_holm, 3), fmt(record.p_wilcoxon, 3),
                     fmt(record.prob_a_better, 3), fmt(record.prob_equivalent, 3), fmt(record.prob_b_better, 3),
                     fmt(getattr(record, "mde", math.nan), 3), _splits_text(getattr(record, "splits_needed", math.nan)),
                     record.verdict, _text(getattr(record, "caution", "")), record.note])
    header = ["A", "B", "metric", "n", "mean diff (A - B)", "95% CI (corrected)", "t (corrected)",
              "p (corrected)", "p (Holm)", "p (Wilcoxon, descriptive)", "P(A better)", "P(equivalent)",
              "P(B better)", "mde (80% power)", "splits needed", "verdict", "caution", "note"]
    return markdown_table(header, rows)


def _splits_text(value: Any) -> str:
    value = float(value) if value is not None else math.nan
    return f"{int(value)}" if math.isfinite(value) else "-"


def key_comparison_markdown(comparison: pd.DataFrame, metric: str) -> str:
    """The compact comparison table of one metric (report.md's first table, the README's table)."""
    rows = []
    for record in comparison[comparison["metric"] == metric].itertuples(index=False):
        rows.append([record.a, record.b, fmt(record.mean_diff, 3), _interval(record.ci95_low, record.ci95_high),
                     fmt(record.p_holm, 3), fmt(record.prob_a_better, 2), fmt(record.prob_equivalent, 2),
                     fmt(record.prob_b_better, 2), record.verdict, _text(getattr(record, "caution", ""))])
    header = ["A", "B", f"mean diff in {metric} (A - B)", "95% CI (corrected)", "p (Holm)",
              "P(A better)", "P(equivalent)", "P(B better)", "verdict", "caution"]
    return markdown_table(header, rows)


def caution(row: ComparisonRow) -> str:
    """A warning appended to a verdict when either side carries leaky or optimistic folds."""
    text = row.get("caution")
    return f" (caution: {text}; such scores are optimistic)" if isinstance(text, str) and text else ""
