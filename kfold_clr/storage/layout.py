"""The names a run writes in its results directory, as exact patterns.

Deleting (``--fresh``, stale temporaries of a killed run, a fold's old TensorBoard
events) touches only a file whose name a run could have written in that folder;
anything else is the user's and stays where it is. ::

    RESULTS/.kfold_clr .lock .lock.owner meta.json config.yaml splits.json  *.csv  report.md
    RESULTS/folds/STRATEGY/rR_fF.json (.weights.npz, .snapshots.npz, .predictions.npz)
    RESULTS/folds/STRATEGY/tune/rR_fF_INNER_pP.json
    RESULTS/range_tests/SCOPE.json          RESULTS/plots/{fold_scores,learning_curves,...}_*.png
    RESULTS/checkpoints/HASH.ckpt.npz       (HASH: 16 hex digits; a job's checkpoint)
    RESULTS/tensorboard/STRATEGY/rR_fF/events.out.tfevents.*
    RESULTS/range_test/rR_fF/range_test.csv (.png)     (`kfold-clr range-test`)

A temporary file of an atomic write is ``.NAME.XXXXXXXX.tmp`` beside NAME
(`kfold_clr.storage.ownership.atomic_write`), so it is ours only when NAME is; the write probe
of `ResultsStore.open` is ``..write-probe.XXXXXXXX.tmp``.
"""

from __future__ import annotations

import re
from os import PathLike

_KEY = r"r\d+_f\d+"
_FIT_KEY = _KEY + r"_(?:i\d+of\d+|holdout[0-9a-f]{8})_p\d+"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a safe strategy or file-name part (see config `name` rules)
EVENT_FILE = r"events\.out\.tfevents\.\d+\.[^/]+"  # tf.summary's file writer: .TIME.HOST.PID.N.v2

#: the results a run writes at the top of its results directory (`--fresh` deletes them).
RESULT_FILES = ("folds.csv", "history.csv", "lr.csv", "range_tests.csv", "summary.csv", "comparison.csv",
                "predictions.csv", "report.md", "splits.json", "meta.json", "config.yaml")
#: folder (relative, "*" for any one name) -> file names a run writes there.
_FILES = {
    ".": "|".join([r"\.lock", r"\.lock\.owner", r"\.write-probe", *map(re.escape, RESULT_FILES)]),
    "folds/*": rf"{_KEY}\.(?:json|weights\.npz|snapshots\.npz|predictions\.npz)",
    "folds/*/tune": rf"{_FIT_KEY}\.json",
    "range_tests": rf"(?:shared|{_KEY}(?:_i\d+of\d+|_holdout[0-9a-f]{{8}})?)\.json",
    "plots": r"(?:(?:fold_scores|learning_curves|range_test|confusion_matrix|confident_errors)_[A-Za-z0-9_.-]+|"
             r"lr_trace|range_tests_per_fold)\.png",
    "checkpoints": r"[0-9a-f]{16}\.ckpt\.npz",
    "tensorboard/*/*": EVENT_FILE,
    "range_test/*": r"range_test\.(?:csv|png)",
}
#: the folders `--fresh` empties of a run's files (`range_test/` holds the `range-test` verb's, kept).
FOLDERS = ("folds", "range_tests", "plots", "tensorboard", "checkpoints")
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's 8 random characters


def _folder_pattern(folder: str) -> str:
    return "/".join(_NAME if part == "*" else re.escape(part) for part in folder.split("/"))


_WRITTEN = [(re.compile(_folder_pattern(folder) if folder != "." else ""), re.compile(names))
            for folder, names in _FILES.items()]


def folder_of_a_run(relative: str | PathLike[str]) -> bool:
    """Whether a run creates the folder at `relative` (it may delete it once empty)."""
    relative = str(relative).replace("\\", "/")
    return any(re.fullmatch(_folder_pattern("/".join(folder.split("/")[:depth])), relative)
               for folder in _FILES if folder != "." for depth in range(1, folder.count("/") + 2))


def written_by_a_run(relative: str | PathLike[str]) -> bool:
    """Whether a run could have written the file at `relative` (a path inside the results directory)."""
    folder, _, name = str(relative).replace("\\", "/").rpartition("/")
    return any(where.fullmatch(folder) and names.fullmatch(name) for where, names in _WRITTEN)


def temporary_of_a_run(relative: str | PathLike[str]) -> bool:
    """Whether `relative` is the temporary file of an atomic write of a file a run writes."""
    folder, _, name = str(relative).replace("\\", "/").rpartition("/")
    match = _TEMPORARY.fullmatch(name)
    return match is not None and written_by_a_run(f"{folder}/{match['name']}" if folder else match["name"])
