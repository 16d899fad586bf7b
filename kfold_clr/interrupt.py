"""Ctrl-C that is never lost: a flag checked at safe points, beside the usual KeyboardInterrupt.

Python raises KeyboardInterrupt wherever the main thread happens to be; when
that is a garbage-collector callback the exception is printed and dropped, and
the run would go on. The handler here also sets a flag that the trainer checks
after every epoch and the runner after every fold.
"""

import contextlib
import signal
import sys
import threading

_requested = threading.Event()


def check():
    """Raise KeyboardInterrupt if Ctrl-C was pressed (call at safe points)."""
    if _requested.is_set():
        raise KeyboardInterrupt


def _handler(signum, frame):
    _requested.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def watching():
    """Install the handler for the duration (main thread only; an ignored SIGINT stays ignored)."""
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return
    previous_hook = sys.unraisablehook

    def quiet_hook(unraisable):
        # The interrupt that landed in a garbage-collector callback is not lost (the flag
        # holds it); don't print its traceback.
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            previous_hook(unraisable)

    signal.signal(signal.SIGINT, _handler)
    sys.unraisablehook = quiet_hook
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
