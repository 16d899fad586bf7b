"""The report's out-of-fold predictions: ``predictions.csv``, its figures and its section.

`write_predictions` rebuilds ``predictions.csv`` from the payloads saved beside the
fold records (`kfold_clr.storage.store.ResultsStore.predictions`; old results and failed
folds have none), so ``kfold-clr report DIR`` and a resumed run write the same
file; ok folds whose payload is missing or damaged are named (a warning line and
the report), and a rerun trains them again. `draw_prediction_plots` draws, per strategy and over its ok folds, a
confusion matrix (classification) and, for image sets, a grid of the most
confidently wrong validation images read from the data folder of ``config.yaml``
(a note instead when the folder is gone). `predictions_section` is the markdown.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from typing import TYPE_CHECKING, Any

from kfold_clr.analysis import predictions as oof
from kfold_clr.analysis import tables
from kfold_clr.report.figures import safe_name
from kfold_clr.storage import ownership
from kfold_clr.storage.ownership import atomic_write
from kfold_clr.storage.store import ResultsStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from kfold_clr.config import ExperimentConfig

CSV_NAME = "predictions.csv"
FLOAT_FORMAT = "%.7g"  # float32 outputs: 7 significant digits
N_WRONG = 12  # images in a strategy's grid of confident mistakes
THUMBNAIL = (160, 160)


@dataclasses.dataclass(frozen=True)
class SavedPredictions(oof.Predictions):
    """`predictions.csv` as written, and the ok folds whose rows it lacks ("STRATEGY rR_fF"): their
    predictions file is missing or damaged."""

    missing: tuple = ()


def write_predictions(directory: pathlib.Path, strategies: Sequence[str]) -> SavedPredictions | None:
    """Rebuild ``predictions.csv`` from the saved payloads of `strategies` (rows in that order);
    ok folds without a readable payload are named in a warning line on stderr.

    Returns:
        `SavedPredictions`, or None when no fold saved predictions (then an earlier
        ``predictions.csv`` is removed: its folds are gone).
    """
    store = ResultsStore(directory)
    found = store.predictions(strategies)
    missing = _folds_without_predictions(store, strategies, found)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        print(f"kfold-clr: warning: {CSV_NAME} lacks the rows of {len(missing)} fold(s) whose predictions file is "
              f"missing or damaged: {shown}; rerun `kfold-clr run` to train them again", file=sys.stderr)
    saved = oof.predictions_table(found, strategies=strategies)
    path = ownership.inside(directory, CSV_NAME)
    if saved is None:
        if path.is_file() or path.is_symlink():
            ownership.remove(path)
        return None
    atomic_write(path, lambda stream: saved.frame.to_csv(stream, index=False, float_format=FLOAT_FORMAT,
                                                         encoding="utf-8", lineterminator="\n"))
    return SavedPredictions(saved.frame, saved.classes, saved.prob_columns, missing=tuple(missing))


def _folds_without_predictions(store: ResultsStore, strategies: Sequence[str],
                               found: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """"STRATEGY rR_fF" of the ok folds (not diverged, not failed) of `strategies` without a payload in `found`."""
    have = {(row["strategy"], row["repeat"], row["fold"]) for row, _ in found}
    rows = [record["row"] for record in store.records(strategies)]
    return [f"{row['strategy']} r{row['repeat']}_f{row['fold']}" for row in rows
            if row.get("status") == tables.OK and (row.get("strategy"), row.get("repeat"), row.get("fold")) not in have]


def image_folder(config: ExperimentConfig, meta: dict[str, Any]) -> pathlib.Path | None:
    """The image folder of an image set's config (looked up as the run did), or None if it is gone."""
    from kfold_clr.data.datasets import data_file

    if config.data.source != "images" or not config.data.path:
        return None
    runs = meta.get("runs") if isinstance(meta, dict) else None
    base_dir = next((run["base_dir"] for run in reversed(runs or []) if isinstance(run, dict)
                     and isinstance(run.get("base_dir"), str)), os.getcwd())
    folder = data_file(config.data, base_dir=base_dir)
    return folder if folder.is_dir() else None


def _thumbnail(folder: pathlib.Path, name: object) -> np.ndarray | None:
    """The image `name` under `folder`, shrunk to `THUMBNAIL`, as an array; None if unreadable."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = (folder / str(name)).resolve()
    if folder.resolve() not in path.parents:
        return None  # a name leading out of the image folder is not read
    try:
        with Image.open(path) as image:
            image.thumbnail(THUMBNAIL)
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _ok_rows(saved: oof.Predictions, folds: pd.DataFrame, status: pd.Series) -> pd.DataFrame:
    ok = folds.loc[(status == tables.OK).to_numpy(), ["strategy", *tables.KEY]].astype({"strategy": str})
    return saved.frame.merge(ok.drop_duplicates(), on=oof.KEY, how="inner")


def draw_prediction_plots(directory: pathlib.Path, saved: oof.Predictions | None, folds: pd.DataFrame,
                          status: pd.Series, order: Sequence[str], *,
                          images: pathlib.Path | None = None) -> list[tuple[str, str]]:
    """Per strategy, over its ok folds: a confusion matrix and, given the image folder, the grid
    of its most confidently wrong validation images.

    Returns:
        list of (title, relative path) of the figures drawn.
    """
    from kfold_clr.plots import experiment as figures
    from kfold_clr.plots import predictions as plots

    drawn = []

    def save(figure: Figure | Axes, name: str, title: str, **options) -> None:
        figures.save_figure(figure, ownership.inside(directory, "plots", name), **options)
        drawn.append((title, f"plots/{name}"))

    if saved is None or not saved.is_classification:
        return drawn
    rows = _ok_rows(saved, folds, status)
    for name in order:
        frame = rows[rows["strategy"] == name]
        if frame.empty:
            continue
        save(plots.plot_confusion_matrix(oof.confusion(frame, saved.classes), saved.classes,
                                         title=name),
             f"confusion_matrix_{safe_name(name)}.png", f"Confusion matrix ({name})", bbox_inches="tight")
        wrong = oof.confidently_wrong(frame, saved.prob_columns, N_WRONG) if "file" in frame else frame[:0]
        if images is not None and len(wrong):
            captions = [f"true {t}, predicted {p} ({c:.0%})\n{pathlib.PurePath(str(f)).name}"
                        for t, p, c, f in wrong[["y_true", "y_pred", "confidence", "file"]].itertuples(index=False)]
            grid = plots.plot_image_grid((_thumbnail(images, f) for f in wrong["file"]), captions)
            save(grid, f"confident_errors_{safe_name(name)}.png", f"Most confidently wrong images ({name})")
    return drawn


def predictions_section(saved: oof.Predictions | None, drawn: Sequence[tuple[str, str]], *, config: ExperimentConfig,
                        images: pathlib.Path | None = None) -> str:
    """The report's "Predictions" section: what ``predictions.csv`` holds and the figures drawn."""
    if saved is None:
        return ""
    n_folds = saved.frame[oof.KEY].drop_duplicates().shape[0]
    columns = "`y_true`, `y_pred` and `prob_<class>`" if saved.is_classification else "`y_true` and `y_pred`"
    text = (f"## Predictions\n\nEvery validation row's out-of-fold prediction ({len(saved.frame)} rows from "
            f"{n_folds} folds) is in `{CSV_NAME}`: `row` (the data set's row), "
            + ("`file`, " if "file" in saved.frame else "") + columns
            + (", and the snapshot ensemble's `snapshot_*`" if "snapshot_y_pred" in saved.frame else "")
            + ". The figures count the ok folds only.\n")
    missing = getattr(saved, "missing", ())
    if missing:
        text += (f"\nIt lacks the rows of {len(missing)} ok fold(s) whose predictions file is missing or damaged: "
                 + ", ".join(f"`{fold}`" for fold in missing) + "; rerun `kfold-clr run` to train them again.\n")
    if config.data.source == "images" and saved.is_classification and images is None:
        text += (f"\nThe most confidently wrong images are not shown: the image folder {config.data.path!r} "
                 "named in config.yaml is not there.\n")
    return text + "".join(f"\n### {title}\n\n![{title}]({link})\n" for title, link in drawn)
