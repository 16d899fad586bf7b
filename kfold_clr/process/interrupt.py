"""Stop requests that are never lost: Ctrl-C, SIGTERM and SIGHUP, all handled like Ctrl-C.

`docker stop`, Kubernetes, Slurm and a closed terminal send SIGTERM or SIGHUP.
While :func:`watching` is active each of them raises :class:`Interrupted` (a
KeyboardInterrupt) in the main thread, so the runner saves what finished,
rebuilds its tables and report, releases its lock and exits with 128 + the
signal number (130, 143, 129).

A second signal (a supervisor that sends SIGTERM twice, an impatient Ctrl-C)
does not interrupt the clean-up of the first; a third stops it at once (the lock
is still released).

Python raises the exception wherever the main thread happens to be; when that
is a garbage-collector callback the exception is printed and dropped, and the
run would go on. The handler therefore also sets a flag that the trainer checks
after every epoch and the runner after every fold (:func:`check`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_requested = []  # the signal numbers received while watching


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal.

    Attributes:
        signum: int. The signal received.
        exit_code: int. 128 + signum, as a shell reports a process ended by it.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for a plain KeyboardInterrupt, else the Interrupted's own code."""
    return getattr(interrupt, "exit_code", 128 + signal.SIGINT)


def check() -> None:
    """Raise Interrupted if a stop signal arrived (call at safe points)."""
    if _requested:
        raise Interrupted(_requested[0])


def _handler(signum: int, frame: FrameType | None) -> None:
    """Raise on the first signal and on the third and later; the second is only recorded, so a
    second `docker stop` or Ctrl-C a moment after the first does not cut its clean-up short."""
    _requested.append(signum)
    if len(_requested) != 2:
        raise Interrupted(signum)


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Handle the stop signals for the duration (main thread only).

    A signal that the parent process set to be ignored (`nohup`, a shell's
    background job) stays ignored.
    """
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous_hook = sys.unraisablehook

    def quiet_hook(unraisable: sys.UnraisableHookArgs) -> None:
        # The interrupt that landed in a garbage-collector callback is not lost (the flag
        # holds it); don't print its traceback.
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            previous_hook(unraisable)

    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _handler)
    sys.unraisablehook = quiet_hook
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        sys.unraisablehook = previous_hook


@contextlib.contextmanager
def held_to_epoch_end(*, most: float) -> Iterator[None]:
    """A stop signal lets the epoch end: it is recorded and raised at the next :func:`check`
    (the trainers' epoch end, where a checkpoint is saved first). An epoch that has not ended
    `most` seconds later is interrupted there (a supervisor's grace period, e.g. `docker stop`'s
    10 s, is short), and a third signal stops at once. Only in the main thread, inside :func:`watching`.
    """
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    watched = [signum for signum, handler in previous.items() if handler is _handler]
    held = {"timer": None, "expired": False}

    def expire(signum: int) -> None:
        held["expired"] = True
        signal.raise_signal(signum)  # its handler runs in the main thread and raises there

    def hold(signum: int, frame: FrameType | None) -> None:
        if held["expired"]:
            raise Interrupted(signum)
        _requested.append(signum)
        if len(_requested) >= 3:
            raise Interrupted(signum)
        if held["timer"] is None:
            held["timer"] = threading.Timer(most, expire, args=(signum,))
            held["timer"].daemon = True
            held["timer"].start()

    for signum in watched:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        if held["timer"] is not None:
            held["timer"].cancel()
        for signum in watched:
            signal.signal(signum, previous[signum])
