"""The results directory: atomic writes, a lock, per-fold records and resume.

Each finished fold is one self-contained JSON record under
``folds/<strategy>/<key>.json`` carrying the fingerprint of the config parts it
depends on. The tables (`folds.csv`, `history.csv`, `lr.csv`, ...) are rebuilt
from the records, so a killed run loses at most the fold in progress.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import pandas as pd

from kfold_clr.errors import DataError, ResultsError
from kfold_clr.storage import layout, ownership, provenance
from kfold_clr.storage.lock import RunLock
from kfold_clr.storage.npzfile import load_npz
from kfold_clr.storage.ownership import atomic_write, atomic_write_text

if TYPE_CHECKING:
    import numpy as np

    from kfold_clr.training.fold_plans import FoldPlan

_NOT_IN_JSON = ("weights", "predictions")  # saved beside the record (.weights.npz, .predictions.npz)
_PREDICTION_ARRAYS = ("rows", "y_true", "output", "snapshot_output")
_PREDICTION_TEXTS = ("files", "class_names")


def _read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON in `path`, or None when it is missing or damaged (never trusted, redone)."""
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_csv(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and inf become None, numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultsStore:
    """Reads and writes one experiment's results directory.

    Args:
        directory: path. The results directory (claimed and locked on `open`).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = pathlib.Path(directory)
        self._lock = None

    # -- lifecycle -----------------------------------------------------------------
    def open(self, *, protected: Iterable[str | os.PathLike[str]] = ()) -> ResultsStore:
        """Claim the directory (see `kfold_clr.storage.ownership`) and take its lock.

        Args:
            protected: paths. Inputs (config, data) the directory must not contain.
        """
        self.directory = ownership.claim(self.directory, protected=protected)
        try:  # a fresh name (O_EXCL): the probe never opens a file that is already there
            handle, probe = tempfile.mkstemp(dir=self.directory, prefix="..write-probe.", suffix=".tmp")
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise ResultsError(f"output.dir: {str(self.directory)!r} cannot be written "
                               f"({error.strerror or error})") from None
        self._lock = RunLock(self.directory).acquire()
        self._remove_stale_temporaries()
        return self

    def open_existing(self) -> ResultsStore:
        """Lock a results directory written before (it must carry the marker) to rewrite its tables."""
        self.directory = ownership.require_claimed(self.directory)
        self._lock = RunLock(self.directory).acquire()
        return self

    def _remove_stale_temporaries(self) -> None:
        """Temporary files left by a killed run (we hold the lock: nobody else writes); only those
        named like one of ours (`kfold_clr.storage.layout`): `.notes.tmp` or a folder `.mywork.tmp/` stay."""
        for relative in self._files(self.directory):
            if layout.temporary_of_a_run(relative):
                with contextlib.suppress(ResultsError):  # a temporary file: left if it cannot go
                    ownership.remove(self.directory / relative)

    def _files(self, folder: str | os.PathLike[str]) -> list[str]:
        """Paths (relative to the results directory, '/'-separated) of the plain files under `folder`,
        deepest first; links and what lies behind them are never entered."""
        found = []
        for parent, folders, files in os.walk(folder, topdown=False):
            relative = pathlib.Path(parent).relative_to(self.directory).as_posix()
            prefix = "" if relative == "." else f"{relative}/"
            found += [prefix + name for name in files]
            found += [prefix + name for name in folders if os.path.islink(os.path.join(parent, name))]
        return found

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def path(self, *parts: object) -> pathlib.Path:
        """A path inside the results directory, checked to stay there."""
        return ownership.inside(self.directory, *parts)

    def discard(self, strategies: Iterable[str] | None = None) -> list[str]:
        """Delete earlier results: every file this tool writes, or only the fold records of `strategies`.

        Only files whose names a run writes there (`kfold_clr.storage.layout`) go, and the folders
        a run made once they are empty; anything else is left, named in one warning line.

        Returns:
            list of str. The paths left (relative to the results directory).
        """
        if strategies is not None:
            folders = [self.path(top, name) for name in strategies for top in ("folds", "tensorboard")]
        else:
            folders = [self.path(name) for name in layout.FOLDERS]
            for name in layout.RESULT_FILES:
                ownership.remove(self.path(name))
        left = []
        for folder in map(ownership.guard, folders):  # a link in place of a folder: refused
            for relative in self._files(folder) if folder.is_dir() else ():
                ours = layout.written_by_a_run(relative) or layout.temporary_of_a_run(relative)
                if ours or (self.directory / relative).is_symlink() and layout.folder_of_a_run(relative):
                    ownership.remove(self.directory / relative)
                else:
                    left.append(relative)
            self._remove_empty_folders(folder)
        if left:
            shown = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
            print(f"kfold-clr: warning: kept {len(left)} file(s) in {self.directory} that kfold_clr did not "
                  f"write: {shown}", file=sys.stderr)
        return left

    def _remove_empty_folders(self, folder: pathlib.Path) -> None:
        """Delete the folders a run makes under `folder` (and `folder`) that are now empty."""
        if not folder.is_dir():
            return
        for parent, _, _ in os.walk(folder, topdown=False):
            path = pathlib.Path(parent)
            if layout.folder_of_a_run(path.relative_to(self.directory).as_posix()) and not any(path.iterdir()):
                ownership.remove(path)

    # -- plain files ---------------------------------------------------------------
    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path(name), text)

    def load_meta(self) -> Optional[dict]:
        """The saved `meta.json` (None when missing or damaged)."""
        return _read_json(self.path("meta.json"))

    # -- fold records -------------------------------------------------------------
    def record_path(self, strategy: str, key: str) -> pathlib.Path:
        return self.path("folds", strategy, f"{key}.json")

    def load_record(self, strategy: str, key: str) -> Optional[dict]:
        return _read_json(self.record_path(strategy, key))

    def finished(self, strategy: str, key: str, expected_fingerprint: str) -> Optional[dict]:
        """The saved record of a fold, if it was finished under the same config with all it saved:
        a fold whose predictions file is gone or damaged is not finished (it is trained again).

        Raises:
            ResultsError: the record was produced by a different config.
        """
        record = self._finished(self.record_path(strategy, key), strategy, expected_fingerprint)
        if record is not None and record.get("predictions_file") and self.load_predictions(strategy, key) is None:
            print(f"kfold-clr: {self.predictions_path(strategy, key)} is missing or damaged: fold {key} of "
                  f"strategy {strategy!r} counts as not done (it is trained again when {strategy!r} runs)",
                  file=sys.stderr)
            return None
        return record

    def _finished(self, path: pathlib.Path, strategy: str, expected_fingerprint: str) -> Optional[dict]:
        record = _read_json(path)
        if record is None or record.get("row", {}).get("status") == "failed":
            return None  # a failed fold is tried again (diverged folds are results)
        if record.get("fingerprint") != expected_fingerprint:
            change = provenance.describe_change(record.get("fingerprint_parts"), expected_fingerprint)
            raise ResultsError(
                f"output.dir: {str(self.directory)!r} holds results of strategy {strategy!r} "
                f"from a different config, data or code ({change}); rerun with --fresh to discard them, "
                "or set another output.dir")
        return record

    def tune_record_path(self, strategy: str, key: str) -> pathlib.Path:
        return self.path("folds", strategy, "tune", f"{key}.json")

    def finished_fit(self, strategy: str, key: str, expected_fingerprint: str) -> Optional[dict]:
        """A tuned strategy's saved grid fit (`folds/STRATEGY/tune/KEY.json`), as `finished` reads a fold."""
        return self._finished(self.tune_record_path(strategy, key), strategy, expected_fingerprint)

    def save_fit(self, strategy: str, key: str, record: dict) -> None:
        self._save(self.tune_record_path(strategy, key), record)

    def save_record(self, strategy: str, key: str, record: dict) -> None:
        """Save a fold's record; its predictions (`record["predictions"]`) go to a sibling file first,
        named in the record (`predictions_file`), so a record on disk always has its whole payload
        and a payload lost later makes the fold one to do again (a record without one: any older file goes)."""
        payload = record.get("predictions")
        if payload is not None:
            self.save_predictions(strategy, key, payload)
            record = {**record, "predictions_file": self.predictions_path(strategy, key).name}
        elif (stale := self.predictions_path(strategy, key)).is_file() or stale.is_symlink():
            ownership.remove(stale)  # a link there is refused, never followed
        self._save(self.record_path(strategy, key), record)

    @staticmethod
    def _save(path: pathlib.Path, record: dict) -> None:
        parts = provenance.fingerprint_parts(record.get("fingerprint"))  # to say later what changed
        clean = _clean({k: v for k, v in record.items() if k not in _NOT_IN_JSON}
                       | ({"fingerprint_parts": parts} if parts is not None else {}))
        atomic_write_text(path, json.dumps(clean))

    # -- predictions -------------------------------------------------------------------
    def predictions_path(self, strategy: str, key: str) -> pathlib.Path:
        return self.path("folds", strategy, f"{key}.predictions.npz")

    def save_predictions(self, strategy: str, key: str, payload: dict) -> None:
        """A fold's predictions payload (`kfold_clr.analysis.predictions`) as ``KEY.predictions.npz``."""
        import numpy as np

        arrays = {name: np.asarray(payload[name]) for name in _PREDICTION_ARRAYS if payload.get(name) is not None}
        for name in _PREDICTION_TEXTS:  # file names and class labels as text, never pickled objects
            if payload.get(name) is not None:
                arrays[name] = np.asarray([str(item) for item in payload[name]], dtype=str)
        atomic_write(self.predictions_path(strategy, key), lambda stream: np.savez_compressed(stream, **arrays))

    def load_predictions(self, strategy: str, key: str) -> Optional[dict]:
        """A fold's saved predictions payload (dict of arrays and lists), or None when missing or damaged."""
        try:
            payload = load_npz(self.predictions_path(strategy, key), what="predictions file")
        except DataError:
            return None
        n = len(payload["rows"]) if "rows" in payload and payload["rows"].ndim == 1 else None
        if n is None or not {"y_true", "output"} <= payload.keys() or any(
                payload[name].shape[:1] != (n,) for name in payload if name != "class_names"):
            return None  # not a payload this version wrote: no rows rather than wrong ones
        return {name: value.tolist() if name in _PREDICTION_TEXTS else value for name, value in payload.items()}

    def predictions(self, strategies: Iterable[str]) -> list[tuple[dict, dict]]:
        """[(fold row, payload)] of every saved fold record of `strategies` (failed ones have none),
        in name then key order."""
        found = []
        for strategy in strategies:
            for path in sorted(self.path("folds", strategy).glob("*.json")):
                record = self.load_record(strategy, path.stem)
                if record is None or record.get("row", {}).get("status") == "failed":
                    continue
                payload = self.load_predictions(strategy, path.stem)
                if payload is not None:
                    found.append((record["row"], payload))
        return found

    def save_weights(self, strategy: str, key: str, weights: Sequence[np.ndarray]) -> None:
        import numpy as np

        atomic_write(self.path("folds", strategy, f"{key}.weights.npz"),
                     lambda stream: np.savez(stream, *weights))

    def save_plan_snapshots(self, plan: FoldPlan, snapshots: Sequence[Sequence[np.ndarray]]) -> None:
        """`save_snapshots` for a FoldPlan (the trainers' callback); a grid fit's are not its fold's."""
        if getattr(plan, "fit", None) is None:
            self.save_snapshots(plan.strategy, plan.key, snapshots)

    def save_snapshots(self, strategy: str, key: str, snapshots: Sequence[Sequence[np.ndarray]]) -> None:
        """Snapshot weights of one fold: `folds/<strategy>/<key>.snapshots.npz` (snapshot i, array j)."""
        import numpy as np

        arrays = {f"s{i}_w{j}": array for i, weights in enumerate(snapshots) for j, array in enumerate(weights)}
        atomic_write(self.path("folds", strategy, f"{key}.snapshots.npz"),
                     lambda stream: np.savez(stream, **arrays))

    def load_weights(self, strategy: str, key: str) -> Optional[list[np.ndarray]]:
        import numpy as np

        path = self.path("folds", strategy, f"{key}.weights.npz")
        if not path.exists():
            return None
        with np.load(path) as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]

    def records(self, strategies: Iterable[str]) -> list[dict]:
        """Every saved record of the given strategies, in name then key order."""
        found = []
        for strategy in strategies:
            folder = self.path("folds", strategy)
            for path in sorted(folder.glob("*.json")):
                record = self.load_record(strategy, path.stem)
                if record is not None:
                    found.append(record)
        return found

    # -- range tests -----------------------------------------------------------------
    def range_test_path(self, scope: str) -> pathlib.Path:
        return self.path("range_tests", f"{scope}.json")

    def load_range_test(self, scope: str, expected_fingerprint: str) -> Optional[dict]:
        saved = _read_json(self.range_test_path(scope))
        return saved if saved is not None and saved.get("fingerprint") == expected_fingerprint else None

    def save_range_test(self, scope: str, payload: dict) -> None:
        atomic_write_text(self.range_test_path(scope), json.dumps(_clean(payload)))

    def range_tests(self) -> list[dict]:
        folder = self.path("range_tests")
        saved = (_read_json(path) for path in sorted(folder.glob("*.json")))
        return [payload for payload in saved if payload is not None]

    # -- tables ----------------------------------------------------------------------
    def write_tables(self, records: Sequence[dict], *, strategies: Sequence[str],
                     range_tests: Iterable[dict] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rebuild folds.csv, history.csv, lr.csv and range_tests.csv from the records."""
        order = {name: i for i, name in enumerate(strategies)}

        def ordered(frame: pd.DataFrame) -> pd.DataFrame:
            if frame.empty:
                return frame
            frame = frame.assign(_order=frame["strategy"].map(order))
            keys = ["_order", "repeat", "fold"] + [c for c in ("epoch", "iteration") if c in frame]
            return frame.sort_values(keys, kind="stable").drop(columns="_order")

        folds = ordered(pd.DataFrame([r["row"] for r in records]))
        history = ordered(pd.DataFrame([row for r in records for row in r.get("history", [])]))
        lr = ordered(pd.DataFrame([row for r in records for row in r.get("lr", [])]))
        write_csv(self.path("folds.csv"), folds)
        write_csv(self.path("history.csv"), history)
        write_csv(self.path("lr.csv"), lr)
        rows = []
        for test in range_tests:
            for point in test.get("history", []):
                rows.append({"scope": test["scope"], **point,
                             "base_lr": test.get("base_lr"), "max_lr": test.get("max_lr"),
                             "turned_up": test.get("turned_up"), "next_max_lr": test.get("next_max_lr"),
                             "test_seconds": test.get("seconds")})
        if rows:
            write_csv(self.path("range_tests.csv"), pd.DataFrame(rows))
        return folds, history
