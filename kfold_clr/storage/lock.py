"""The lock of a results directory: a kernel lock that dies with the process holding it.

`filelock` takes an exclusive `flock` (POSIX) or `LockFileEx` (Windows) lock on
``.lock``: there is no window between creating and claiming it, a killed run or a
restarted container leaves nothing that still counts as held, and no process is
ever signalled to find out. Who holds it (host, pid, start time) is written beside
it in ``.lock.owner`` (atomically, never through a link) for the message of a run
that is refused.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import socket

import filelock

from kfold_clr.errors import ResultsError


class RunLock:
    """Exclusive lock of one results directory for one run.

    Args:
        directory: path. The results directory (already claimed).

    Example:

    ```python
    lock = RunLock("results/digits-clr").acquire()
    try:
        ...
    finally:
        lock.release()
    ```
    """

    def __init__(self, directory: str | pathlib.Path) -> None:
        self.directory = pathlib.Path(directory)
        self._lock = filelock.FileLock(str(self.directory / ".lock"), timeout=0)
        self._owner = self.directory / ".lock.owner"

    def acquire(self) -> RunLock:
        """Take the lock now or raise ResultsError naming the run that holds it."""
        from kfold_clr.storage.ownership import atomic_write_text, guard

        try:
            guard(self.directory / ".lock")  # filelock opens it O_NOFOLLOW; say why, not ELOOP
            guard(self._owner)
            self._lock.acquire()
        except filelock.Timeout:
            raise ResultsError(f"output.dir: {str(self.directory)!r} is in use by another run "
                               f"({self._describe_owner()}); wait for it to finish") from None
        except OSError as error:
            raise ResultsError(f"output.dir: {str(self.directory)!r} cannot be locked "
                               f"({error.strerror or error})") from None
        owner = {"host": socket.gethostname(), "pid": os.getpid(),
                 "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        try:
            atomic_write_text(self._owner, json.dumps(owner))
        except ResultsError:
            self._lock.release()
            raise
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                if not self._owner.is_symlink():  # planted since we wrote it: not ours to delete
                    self._owner.unlink()
            except OSError:
                pass  # stale owner notes are overwritten by the next holder
            self._lock.release()

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def _describe_owner(self) -> str:
        try:
            owner = json.loads(self._owner.read_text(encoding="utf-8"))
            return f"process {owner['pid']} on {owner['host']}, started {owner['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "owner unknown"
