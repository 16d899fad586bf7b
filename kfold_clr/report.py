"""Rebuild the tables, figures and ``report.md`` of a results directory from its saved files.

``build_report(results_dir)`` reads ``config.yaml`` and ``folds.csv`` (required),
``history.csv``, ``lr.csv``, ``range_tests.csv`` and ``meta.json`` (when present)
and writes ``summary.csv``, ``comparison.csv``, ``plots/*.png`` and ``report.md``.
Every file is written atomically. A missing or damaged input raises
`kfold_clr.errors.ResultsError` with one line naming the file.
"""

import json
import math
import re

import pandas as pd
import yaml

from kfold_clr import ownership, provenance
from kfold_clr.analysis import tables, verdicts
from kfold_clr.errors import ConfigError, ResultsError
from kfold_clr.store import atomic_write_text, write_csv

DEFAULT_ROPE = 0.01
REQUIRED_FOLD_COLUMNS = ("strategy", "repeat", "fold", "n_train", "n_val")
REQUIRED_COLUMNS = {
    "history.csv": ("strategy", "repeat", "fold", "epoch"),
    "lr.csv": ("strategy", "repeat", "fold", "iteration", "lr"),
    "range_tests.csv": ("scope", "lr", "loss"),
}
LEAKY_TEXT = "validation fold trained on before: carried weights; scores are optimistic"
OPTIMISTIC_TEXT = "the validation fold helped choose the training; scores are optimistic"
RANGE_TEST_ADVICE = ("set range_test.reserve (e.g. 0.2) to run the shared range test on rows set aside from "
                     "every fold")


# ---------------------------------------------------------------- reading


def _one_line(text):
    return " ".join(str(text).split())


def _read_mapping(path, load, problem, shape, *, optional=False):
    """The dict in a YAML or JSON file of the directory: ResultsError if unreadable or not a mapping.

    Args:
        load: callable(text). `yaml.safe_load` or `json.loads`.
        problem, shape: str. Wording of the errors, e.g. "read as YAML", "a mapping of settings".
        optional: bool. A missing file gives {} instead of an error.
    """
    if not path.is_file():
        if optional:
            return {}
        raise ResultsError(f"{path}: not found; a results directory written by `kfold-clr run` has one")
    try:
        mapping = load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise ResultsError(f"{path}: cannot be {problem} ({_one_line(error)})") from error
    if not isinstance(mapping, dict):
        raise ResultsError(f"{path}: must hold {shape}; found {type(mapping).__name__}")
    return mapping


def _read_csv(path, required, *, optional=False):
    if not path.is_file():
        if optional:
            return None
        raise ResultsError(f"{path}: not found; a results directory written by `kfold-clr run` has one")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as error:
        raise ResultsError(f"{path}: cannot be parsed as CSV ({_one_line(error)})") from error
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ResultsError(
            f"{path}: missing required column(s) {missing}; found {list(frame.columns)[:12]}"
        )
    for column in ("repeat", "fold", "epoch", "iteration", "lr", "n_train", "n_val"):
        if column in required and column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = values.isna() & frame[column].notna()
            if bad.any():
                raise ResultsError(
                    f"{path}: column {column!r} must be numeric; found {frame.loc[bad, column].iloc[0]!r} "
                    f"in row {int(bad.to_numpy().nonzero()[0][0]) + 2}"
                )
            frame[column] = values
    return frame


def _section(config, key):
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _metrics(config, folds, path):
    """(metrics for the tables, primary metric) from the config and the columns present."""
    training = [str(m) for m in (_section(config, "training").get("metrics") or []) if isinstance(m, str)]
    requested = _section(config, "compare").get("metrics")
    if requested:
        requested = [str(m) for m in requested]
        missing = [m for m in requested if f"val_{m}" not in folds.columns]
        if missing:
            raise ResultsError(f"{path}: lacks column(s) {[f'val_{m}' for m in missing]} "
                               f"named by compare.metrics={requested}")
    else:
        requested = training + ["loss"]
    metrics = [m for m in dict.fromkeys(requested) if f"val_{m}" in folds.columns]
    if not metrics:
        raise ResultsError(f"{path}: no validation score column; expected one of "
                           f"{[f'val_{m}' for m in dict.fromkeys(requested)]}")
    primary = next((m for m in training if f"val_{m}" in folds.columns), None)
    if primary is None:
        primary = "loss" if "val_loss" in folds.columns else metrics[0]
    if primary not in metrics:
        metrics.insert(0, primary)
    return metrics, primary


# ---------------------------------------------------------------- writing


# ---------------------------------------------------------------- formatting


def _fmt(value, digits=4):
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
        return _fmt(value.item(), digits)
    return str(value)


def markdown_table(header, rows):
    """A GitHub-flavoured Markdown table from a header and rows of cells (any values).

    Args:
        header: list of str. Column titles.
        rows: list of lists. Cells, formatted with 4 significant digits; NaN as "n/a".

    Returns:
        str, ending with a newline.
    """

    def cell(value):
        text = value if isinstance(value, str) else _fmt(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(title) for title in header) + " |",
             "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _interval(low, high):
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"{_fmt(low)} to {_fmt(high)}"


def _range(values):
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "n/a"
    low, high = float(values.min()), float(values.max())
    return f"{low:.3g}" if math.isclose(low, high) else f"{low:.3g} to {high:.3g}"


def _text(value):
    """A text cell: "" for NaN or None (empty CSV cells read back as NaN)."""
    return value if isinstance(value, str) else ""


def _mapping_text(mapping):
    """`key=value` pairs, leaving out unset (None or empty) entries."""
    shown = {key: value for key, value in (mapping or {}).items() if value not in (None, {}, [])}
    return ", ".join(f"{key}={value}" for key, value in shown.items()) if shown else "n/a"


def _safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "scope"


# ---------------------------------------------------------------- sections


def _status_counts(folds, status, order):
    """Folds per strategy, one row per name in ``order``: columns ok, diverged, failed and total."""
    counts = pd.crosstab(folds["strategy"].to_numpy(), status.to_numpy())
    total = counts.sum(axis=1)
    counts = counts.reindex(index=order, columns=[tables.OK, tables.DIVERGED, tables.FAILED], fill_value=0)
    return counts.assign(total=total)


def _settings_section(config, meta, metrics, rope, reference, pairs=None):
    cv = _section(config, "cv")
    training = _section(config, "training")
    n_splits, n_repeats = cv.get("n_splits", "?"), cv.get("n_repeats", 1)
    splits = n_splits * n_repeats if isinstance(n_splits, int) and isinstance(n_repeats, int) else "?"
    rows = [
        ["data", _mapping_text(_section(config, "data"))],
        ["model", _mapping_text(_section(config, "model"))],
        ["cross-validation", f"{cv.get('splitter', 'kfold')}, {n_splits} folds x {n_repeats} repeat(s) "
                             f"= {splits} splits, shuffle={cv.get('shuffle', 'n/a')}"],
        ["epochs", training.get("epochs", "n/a")],
        ["batch size", training.get("batch_size", "n/a")],
        ["metrics", ", ".join(metrics)],
        ["seed", config.get("seed", meta.get("seed", "n/a"))],
        ["comparison", f"{_pairs_text(reference, pairs)}; "
                       f"rope +-{rope:g}; Holm correction per metric; alpha {verdicts.ALPHA}"],
    ]
    runs = provenance.run_history(meta)
    if runs:  # as `kfold-clr run` writes meta.json: one record per run, the last one current
        last = runs[-1]
        rows.append(["runs", f"{len(runs)}; first started {runs[0].get('started', '?')}, last "
                             f"{last.get('outcome', 'finished')} at {last.get('finished') or '?'}"])
        rows.append(["versions", ", ".join(f"{name} {last[name]}" for name in provenance.TRACKED if name in last)])
        for key in ("git_commit", "command"):
            if last.get(key) is not None and not isinstance(last[key], (dict, list)):
                rows.append([key.replace("_", " "), last[key]])
    return "## Settings\n\n" + markdown_table(["setting", "value"], [[k, str(v)] for k, v in rows])


def _strategies_section(config, folds, status, counts):
    specs = _section(config, "strategies")
    rows = []
    for name, tally in counts.iterrows():
        spec = specs.get(name) if isinstance(specs.get(name), dict) else {}
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
    if len(failed):
        text += "\nFailed folds:\n\n"
        for record in failed.head(20).itertuples(index=False):
            error = getattr(record, "error", "")
            error = _one_line(error) if isinstance(error, str) and error.strip() else "no error recorded"
            text += f"- {record.strategy}, repeat {record.repeat}, fold {record.fold}: {error}\n"
        if len(failed) > 20:
            text += f"- ... and {len(failed) - 20} more (see folds.csv)\n"
    return text


def _flags_section(folds, counts):
    lines = []
    for name, tally in counts.iterrows():
        own = (folds["strategy"].astype(str) == name).to_numpy()
        total = int(tally["total"])
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
        bad = [f"{int(tally[kind])} of {total} folds {kind}"
               for kind in (tables.DIVERGED, tables.FAILED) if tally[kind]]
        if bad:
            lines.append(f"- **{name}**: {' and '.join(bad)}; they are left out of the means and of the "
                         f"paired tests (a strategy that often diverges is worse than its mean suggests).")
    if not lines:
        return ""
    return "## Flags\n\n" + "\n".join(lines) + "\n"


def _reasons(folds, flagged, column):
    """Why rows were flagged, from the `optimistic_reason` column (one example of each reason)."""
    if column != "optimistic" or "optimistic_reason" not in folds.columns:
        return ""
    texts = [text for text in folds.loc[flagged, "optimistic_reason"] if isinstance(text, str)]
    reasons = list(dict.fromkeys(part for text in texts for part in text.split("; ") if part))
    if not reasons:
        return ""
    shown = [re.sub(r"ran on \d+ of its \d+ validation rows", "ran on some of its validation rows", reason)
             for reason in reasons]
    advice = f"; {RANGE_TEST_ADVICE}" if any("range test" in reason for reason in reasons) else ""
    return f" ({'; '.join(dict.fromkeys(shown))}){advice}"


def _bounds_section(config, folds, status):
    """How the range-test bounds chose LRs: one row per strategy with range-test bounds, and
    for per-fold range tests the spread across folds ("do my folds need different LRs?")."""
    specs = _section(config, "strategies")
    rows, spreads = [], []
    for name, spec in specs.items():
        kind = spec.get("bounds") if isinstance(spec, dict) else None
        own = (folds["strategy"].astype(str) == name).to_numpy() & (status != tables.FAILED).to_numpy()
        if kind not in ("shared_range_test", "per_fold_range_test") or not own.any():
            continue
        frame = folds[own]
        base = pd.to_numeric(frame.get("base_lr"), errors="coerce").dropna()
        peak = pd.to_numeric(frame.get("max_lr"), errors="coerce").dropna()
        if peak.empty:
            continue
        factor = float(peak.max() / peak.min()) if peak.min() > 0 else math.nan
        rows.append([name, "one shared test" if kind == "shared_range_test" else "one test per fold",
                     len(frame), _spread(base), _spread(peak), f"{factor:.2f}x" if math.isfinite(factor) else "n/a"])
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


def _spread(values):
    if values.empty:
        return "n/a"
    return f"{values.min():.3g} / {values.median():.3g} / {values.max():.3g}"


def _summary_markdown(summary):
    rows = []
    for record in summary.itertuples(index=False):
        flags = record.flags if isinstance(record.flags, str) else ""
        rows.append([record.strategy, record.metric, record.mean, record.std,
                     _interval(record.ci95_low, record.ci95_high), int(record.n),
                     int(record.n_diverged), int(record.n_failed), record.train_mean, record.gap,
                     record.fit_seconds_mean, flags])
    header = ["strategy", "metric", "mean", "std", "95% CI (t, over folds)", "n ok", "diverged", "failed",
              "train mean", "gap (train - val)", "fit s", "flags"]
    return markdown_table(header, rows)


def _comparison_markdown(comparison):
    rows = []
    for record in comparison.itertuples(index=False):
        rows.append([record.a, record.b, record.metric, int(record.n), record.mean_diff,
                     _interval(record.ci95_low, record.ci95_high), record.t_corrected,
                     _fmt(record.p_corrected, 3), _fmt(record.p_holm, 3), _fmt(record.p_wilcoxon, 3),
                     _fmt(record.prob_a_better, 3), _fmt(record.prob_equivalent, 3), _fmt(record.prob_b_better, 3),
                     record.verdict, _text(getattr(record, "caution", "")), record.note])
    header = ["A", "B", "metric", "n", "mean diff (A - B)", "95% CI (corrected)", "t (corrected)",
              "p (corrected)", "p (Holm)", "p (Wilcoxon, descriptive)", "P(A better)", "P(equivalent)",
              "P(B better)", "verdict", "caution", "note"]
    return markdown_table(header, rows)


def key_comparison_markdown(comparison, metric):
    """The compact comparison table of one metric (report.md's first table, the README's table)."""
    rows = []
    for record in comparison[comparison["metric"] == metric].itertuples(index=False):
        rows.append([record.a, record.b, _fmt(record.mean_diff, 3), _interval(record.ci95_low, record.ci95_high),
                     _fmt(record.p_holm, 3), _fmt(record.prob_a_better, 2), _fmt(record.prob_equivalent, 2),
                     _fmt(record.prob_b_better, 2), record.verdict, _text(getattr(record, "caution", ""))])
    header = ["A", "B", f"mean diff in {metric} (A - B)", "95% CI (corrected)", "p (Holm)",
              "P(A better)", "P(equivalent)", "P(B better)", "verdict", "caution"]
    return markdown_table(header, rows)


def _caution(row):
    """A warning appended to a verdict when either side carries leaky or optimistic folds."""
    caution = row.get("caution")
    return f" (caution: {caution}; such scores are optimistic)" if isinstance(caution, str) and caution else ""


# ---------------------------------------------------------------- plots


def _ok_history(history, folds, status):
    ok_keys = folds.loc[(status == tables.OK).to_numpy(), ["strategy", *tables.KEY]].astype({"strategy": str})
    history = history.astype({"strategy": str})
    return history.merge(ok_keys.drop_duplicates(), on=["strategy", *tables.KEY], how="inner")


def _draw_plots(directory, folds, status, history, lr, range_tests, order, primary):
    """Draw every figure into ``directory/plots``; returns [(title, relative path)]."""
    from kfold_clr.plots import experiment as figures

    drawn = []

    def save(figure, name, title):
        figures.save_figure(figure, ownership.inside(directory, "plots", name))
        drawn.append((title, f"plots/{name}"))

    if lr is not None and len(lr):
        save(figures.plot_lr_trace(lr, strategies=order), "lr_trace.png",
             "Learning rate applied, folds one after another")
    curve_metrics = list(dict.fromkeys([primary, "loss"]))
    if history is not None and len(history):
        ok_history = _ok_history(history, folds, status)
        for metric in curve_metrics:
            if f"val_{metric}" in ok_history.columns and len(ok_history):
                save(figures.plot_learning_curves(ok_history, metric, strategies=order),
                     f"learning_curves_{_safe_name(metric)}.png", f"Learning curves ({metric})")
    for metric in curve_metrics:
        if f"val_{metric}" in folds.columns:
            save(figures.plot_fold_scores(folds.assign(status=status), metric, strategies=order),
                 f"fold_scores_{_safe_name(metric)}.png", f"Validation {metric} per fold")
    if range_tests is not None and len(range_tests):
        scopes = range_tests["scope"].astype(str)
        per_fold = range_tests[scopes != "shared"]
        if scopes.eq("shared").any():
            save(figures.plot_range_test_scope(range_tests[scopes == "shared"]), "range_test_shared.png",
                 "LR range test (shared)")
        if per_fold["scope"].nunique() > 1:  # one figure for all folds, not one each
            save(figures.plot_range_tests_per_fold(per_fold), "range_tests_per_fold.png",
                 "LR range tests, one per fold")
        else:
            for scope, frame in per_fold.groupby("scope", sort=False):
                save(figures.plot_range_test_scope(frame), f"range_test_{_safe_name(scope)}.png",
                     f"LR range test ({scope})")
    return drawn


# ---------------------------------------------------------------- entry point


def _resolve_rope(rope, compare):
    if rope is None:
        rope = compare.get("rope", DEFAULT_ROPE)
        if rope is None:
            rope = DEFAULT_ROPE
        source = "compare.rope"
    else:
        source = "Argument `rope`"
    try:
        rope = float(rope)
    except (TypeError, ValueError):
        rope = math.nan
    if not rope >= 0:
        raise ConfigError(f"{source} must be a number >= 0. Received: rope={rope!r}")
    return rope


def _pairs_text(reference, pairs):
    if pairs:
        return "the pairs " + ", ".join(f"{a} vs {b}" for a, b in pairs)
    return f"each strategy vs {reference}" if reference else "every pair of strategies"


def _configured_pairs(compare, reference):
    """`compare.pairs` of the saved config as (A, B) tuples, unless a reference was asked for."""
    pairs = compare.get("pairs")
    if reference is not None or not isinstance(pairs, list):
        return None
    return [tuple(map(str, pair)) for pair in pairs if isinstance(pair, list) and len(pair) == 2] or None


def _resolve_reference(reference, compare, order):
    if reference is not None:
        if reference not in order:
            raise ConfigError(f"Argument `reference` must be one of {order}. Received: reference={reference!r}")
        return reference, ""
    configured = compare.get("reference")
    if configured is None:
        return None, ""
    if str(configured) not in order:
        return None, (f"compare.reference={configured!r} has no results here; every pair of strategies "
                      f"is compared instead.")
    return str(configured), ""


def build_report(results_dir, *, rope=None, reference=None):
    """Rebuild summary, comparison, plots and ``report.md`` from a saved results directory.

    Reads ``config.yaml`` and ``folds.csv`` (and ``history.csv``, ``lr.csv``,
    ``range_tests.csv``, ``meta.json`` when present). Writes, atomically:
    ``summary.csv`` (`tables.summary_table`), ``comparison.csv``
    (`tables.comparison_table`), ``plots/*.png`` and ``report.md`` with the
    settings, both tables, the verdicts on the primary metric (the first of
    ``training.metrics``, else "loss"), the figures and flags for leaky or
    optimistic rows.

    Args:
        results_dir: str or path-like. A directory written by ``kfold-clr run``.
        rope: float or None. Region of practical equivalence in metric units;
            default ``compare.rope`` from the config, else 0.01.
        reference: str or None. Compare each strategy against this one only;
            default ``compare.reference`` from the config, else every pair.

    Returns:
        pathlib.Path of ``report.md``.

    Raises:
        ResultsError: the directory does not exist, lacks config.yaml or
            folds.csv, or a file is unparseable or lacks required columns.
        ConfigError: ``rope`` or ``reference`` is invalid.

    Example:

    ```python
    path = build_report("results/digits-clr")
    print(path.read_text())
    ```
    """
    directory = ownership.require_claimed(results_dir)
    config = _read_mapping(directory / "config.yaml", yaml.safe_load, "read as YAML", "a mapping of settings")
    folds_path = directory / "folds.csv"
    folds = _read_csv(folds_path, REQUIRED_FOLD_COLUMNS)
    if folds.empty:
        raise ResultsError(f"{folds_path}: has no rows; no fold has finished")
    folds["strategy"] = folds["strategy"].astype(str)
    metrics, primary = _metrics(config, folds, folds_path)
    history = _read_csv(directory / "history.csv", REQUIRED_COLUMNS["history.csv"], optional=True)
    lr = _read_csv(directory / "lr.csv", REQUIRED_COLUMNS["lr.csv"], optional=True)
    range_tests = _read_csv(directory / "range_tests.csv", REQUIRED_COLUMNS["range_tests.csv"], optional=True)
    meta = _read_mapping(directory / "meta.json", json.loads, "parsed as JSON", "a JSON object", optional=True)

    compare = _section(config, "compare")
    order = tables.strategy_order(folds, list(_section(config, "strategies")))
    rope = _resolve_rope(rope, compare)
    explicit_reference = reference is not None
    reference, reference_note = _resolve_reference(reference, compare, order)
    pairs = _configured_pairs(compare, reference if explicit_reference else None)
    status = tables.fold_status(folds)
    counts = _status_counts(folds, status, order)
    try:
        summary = tables.summary_table(folds, metrics, strategies=order)
        comparison = tables.comparison_table(folds, metrics, strategies=order, reference=reference, pairs=pairs,
                                             rope=rope)
    except ValueError as error:
        raise ResultsError(f"{folds_path}: {_one_line(error)}") from error

    write_csv(ownership.inside(directory, "summary.csv"), summary)
    write_csv(ownership.inside(directory, "comparison.csv"), comparison)
    drawn = _draw_plots(directory, folds, status, history, lr, range_tests, order, primary)

    name = config.get("name") or directory.name
    parts = [f"# {name}: k-fold comparison of learning-rate strategies\n",
             f"Rebuilt from `{directory.name}/` by `kfold-clr report`. Primary metric: **{primary}**. "
             f"Only folds with status ok enter means and tests; comparisons are paired on (repeat, fold) "
             f"and use the corrected resampled t-test (Nadeau & Bengio) and the Bayesian correlated "
             f"t-test (Benavoli et al.).\n",
             _settings_section(config, meta, metrics, rope, reference, pairs),
             _strategies_section(config, folds, status, counts)]
    flags = _flags_section(folds, counts)
    if flags:
        parts.append(flags)
    bounds = _bounds_section(config, folds, status)
    if bounds:
        parts.append(bounds)
    primary_rows = comparison[comparison["metric"] == primary]
    verdict_text = "## Verdicts\n\n"
    if reference_note:
        verdict_text += reference_note + "\n\n"
    if len(primary_rows):
        verdict_text += "\n".join(f"- {verdicts.verdict_line(row)}{_caution(row)}"
                                   for _, row in primary_rows.iterrows()) + "\n"
    else:
        verdict_text += "Only one strategy has results; there is nothing to compare.\n"
    parts.append(verdict_text)
    if len(primary_rows):
        parts.append(f"## Key comparisons ({primary})\n\n" + key_comparison_markdown(comparison, primary))
    parts.append("## Summary\n\nValidation scores over ok folds (written to `summary.csv`).\n\n"
                 + _summary_markdown(summary))
    parts.append("## Comparisons\n\nA - B on shared splits (written to `comparison.csv`). "
                 f"Probabilities use a rope of +-{rope:g}; Wilcoxon is descriptive only.\n\n"
                 + (_comparison_markdown(comparison) if len(comparison) else "No pairs to compare.\n"))
    if drawn:
        parts.append("## Figures\n\n" + "\n".join(f"### {title}\n\n![{title}]({link})\n" for title, link in drawn))
    atomic_write_text(ownership.inside(directory, "report.md"), "\n".join(parts))
    return directory / "report.md"
