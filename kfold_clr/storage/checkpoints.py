"""Checkpoints: a job's training state, saved while it trains, so a killed run resumes it exactly.

A job that has trained longer than `execution.checkpoint_every` seconds (0: never) saves, at
the end of its next epoch, everything it needs to go on as if it had never stopped: weights,
optimizer slots and step counters, dropout seed states, per-fold stopping, divergence and
snapshot state, the history so far, and the records of the folds it has finished (a carry
chain). The data order needs no saving: `batch_order(seed, n, epochs)` gives it again. A stop
signal (Ctrl-C, SIGTERM, SIGHUP) lets the epoch end, saves one, and then stops the run.

One file per job, `RESULTS/checkpoints/<16 hex>.ckpt.npz`, written atomically through
`kfold_clr.storage.ownership.atomic_write` (which refuses links). The hex is the job's fingerprint: the
fingerprints of its folds (config, data, code, strategy, fold, grid point), so a changed config
never finds, and never resumes from, an older job's file; the file carries it too. The file
goes when the job's records are saved. Arrays are npz members and everything else one JSON
member: nothing is unpickled.

Example:

```python
checkpoint = Checkpointer(slot, every=60)
saved = checkpoint.start_fold(0, "sequential")    # None: start the fold afresh
...                                               # at every epoch's end:
checkpoint.epoch_end(lambda: {"epoch": epoch, "weights": model.get_weights()})
```
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from kfold_clr.process import interrupt

if TYPE_CHECKING:
    from kfold_clr.planning.jobs import Job
    from kfold_clr.storage.store import ResultsStore

FOLDER = "checkpoints"
SUFFIX = ".ckpt.npz"
FORMAT = 1
_STATE = "__state__"  # the npz member holding the JSON tree
HOLD_SECONDS = 5.0  # how long a stop signal waits for the epoch to end


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one job's checkpoint lives and the fingerprint it must carry.

    Attributes:
        path: str. `RESULTS/checkpoints/<fingerprint>.ckpt.npz`.
        fingerprint: str. 16 hex characters: the hash of the job's fold fingerprints.
    """

    path: str
    fingerprint: str


def job_fingerprint(job: Job, prints: Mapping[str, str]) -> str:
    """The hash of a job's folds: each plan's strategy fingerprint (`prints[strategy]`), fold,
    grid point and schedule offset, plus the bounds they train with and how (fused or not)."""
    from kfold_clr.storage.provenance import fingerprint

    plans = [[plan.strategy, plan.key, plan.fit, list(plan.settings), plan.seed, plan.epochs,
              plan.initial_step, plan.carry_from, prints[plan.strategy]] for plan in job.plans]
    return fingerprint({"plans": plans, "bounds": [str(bound) for bound in job.bounds],
                        "fused": job.fused, "restart": job.restart})


def slot(store: ResultsStore, job: Job, prints: Mapping[str, str]) -> Slot:
    """The checkpoint slot of `job` in `store`'s results directory."""
    printed = job_fingerprint(job, prints)
    return Slot(str(store.path(FOLDER, printed + SUFFIX)), printed)


def remove(where: Slot | None) -> None:
    """Delete a job's checkpoint (a Slot or None), if there is one."""
    import pathlib

    from kfold_clr.storage import ownership

    if where is not None and pathlib.Path(where.path).is_file():
        ownership.remove(where.path)


# ----------------------------------------------------------------------------- the file
def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON tree of `value` with every array moved to `arrays` (referenced by name)."""
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"__array__": name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("__") for key in value):
            return {key: _encode(item, arrays) for key, item in value.items()}
        return {"__items__": [[_encode(key, arrays), _encode(item, arrays)] for key, item in value.items()]}
    if isinstance(value, (list, tuple, collections.deque)):
        return [_encode(item, arrays) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "numpy"):  # a tensor or a variable
        return _encode(np.asarray(value.numpy()), arrays)
    raise TypeError(f"a checkpoint cannot hold {type(value).__name__} values")


def _decode(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if "__array__" in tree:
            return arrays[tree["__array__"]]
        if "__items__" in tree:
            return {_decode(key, arrays): _decode(item, arrays) for key, item in tree["__items__"]}
        return {key: _decode(item, arrays) for key, item in tree.items()}
    if isinstance(tree, list):
        return [_decode(item, arrays) for item in tree]
    return tree


def write(path: str, state: dict, *, fingerprint: str) -> None:
    """Write `state` (dicts, lists, JSON values, arrays) and `fingerprint` to `path`, atomically."""
    from kfold_clr.storage.ownership import atomic_write

    arrays = {}
    tree = {"format": FORMAT, "fingerprint": fingerprint, "state": _encode(state, arrays)}
    text = np.frombuffer(json.dumps(tree).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda stream: np.savez(stream, **{_STATE: text}, **arrays))


def read(path: str, *, fingerprint: str) -> dict | None:
    """The state saved at `path`, or None when there is none, it is damaged, or it carries
    another fingerprint (another config's job: never resumed)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            tree = json.loads(archive[_STATE].tobytes().decode("utf-8"))
            if tree.get("format") != FORMAT or tree.get("fingerprint") != fingerprint:
                return None
            arrays = {name: archive[name] for name in archive.files if name != _STATE}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        print(f"kfold-clr: warning: checkpoint {path} cannot be read ({error.__class__.__name__}); "
              "its job starts afresh", file=sys.stderr)
        return None
    return _decode(tree["state"], arrays)


# ----------------------------------------------------------------------------- while a job trains
class Checkpointer:
    """Saves a job's state at an epoch's end every `every` seconds, and when a stop signal came.

    The state saved is `{"records": [...], "fold": {"index", "kind", "state"}}`: the records of the
    job's folds that are finished, and the training state of the fold in progress (what its
    trainer's `gather()` returns).

    Args:
        where: Slot or None. None (or `every == 0`): nothing is saved or read.
        every: float. Seconds of training between two checkpoints.
    """

    def __init__(self, where: Slot | None, every: float) -> None:
        self.where, self.every = where, float(every)
        self.enabled = where is not None and self.every > 0
        self.saves, self.save_seconds = 0, 0.0
        self._saved = read(where.path, fingerprint=where.fingerprint) if self.enabled else None
        self._records = list((self._saved or {}).get("records", []))
        self._fold, self.saved_state = (0, None), None
        self._last = time.perf_counter()

    def finished_records(self) -> list:
        """Records of the job's folds finished before the checkpoint (in order)."""
        return list(self._records)

    def start_fold(self, index: int, kind: str) -> dict | None:
        """The job's fold `index` starts, trained as `kind` ("sequential" or "fused"): it is the one
        that saves next, and `saved_state` is its state saved before (None: it starts afresh)."""
        self._fold = (index, kind)
        fold = (self._saved or {}).get("fold")
        matches = bool(fold) and fold.get("index") == index and fold.get("kind") == kind
        self.saved_state = fold.get("state") if matches else None
        return self.saved_state

    def due(self) -> bool:
        return self.enabled and time.perf_counter() - self._last >= self.every

    def epoch_end(self, gather: Callable[[], dict], *, stopping: bool = False) -> None:
        """At an epoch's end: save `gather()` if the interval has passed, or, when a stop signal
        came, save it and raise the stop. `stopping`: the fold ends now (nothing to resume, so
        only a stop signal saves)."""
        try:
            interrupt.check()
        except KeyboardInterrupt:
            if self.enabled:
                self.save(gather())
            raise
        if self.due() and not stopping:
            self.save(gather())

    def fold_done(self, record: dict, *, more: bool) -> None:
        """A fold of the job finished; `more`: folds of the job still to train (then its record
        is kept in the next checkpoint)."""
        if more and self.enabled:
            self._records.append(record)
            if self.due():
                self.save(None)

    def save(self, state: dict | None) -> None:
        started = time.perf_counter()
        index, kind = self._fold
        fold = None if state is None else {"index": index, "kind": kind, "state": state}
        write(self.where.path, {"records": self._records, "fold": fold}, fingerprint=self.where.fingerprint)
        self._saved = None  # from now on this run's own state is the one to go on from
        self.saves += 1
        self._last = time.perf_counter()
        self.save_seconds += self._last - started


def stops_held_to_epoch_end(checkpoint: Checkpointer | None, *,
                            most: float = HOLD_SECONDS) -> contextlib.AbstractContextManager[None]:
    """While a checkpointing job trains, a stop signal lets the epoch end, where
    `Checkpointer.epoch_end` saves before it is raised (`interrupt.held_to_epoch_end`).
    Only in the main thread of a process that watches stop signals (`interrupt.watching`)."""
    if (checkpoint is None or not checkpoint.enabled
            or threading.current_thread() is not threading.main_thread()):
        return contextlib.nullcontext()
    return interrupt.held_to_epoch_end(most=most)
