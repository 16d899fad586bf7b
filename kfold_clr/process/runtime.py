"""Process set-up for TensorFlow: a quiet import, thread limits, shared GPUs.

Used by the command line and by every worker process or Ray task.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

_TF_STARTUP_NOISE = re.compile(r"^(WARNING: All log messages before absl|To enable the following instructions|"
    r"[IWE]\d{4} \S+ +\d+ (port|cudart_stub|cuda_|gpu_|cpu_feature_guard)\S*\.cc)")


def import_tensorflow_quietly(before_first_op: Callable[[ModuleType], object] | None = None) -> None:
    """Import TensorFlow with its C++ start-up banner (which ignores TF_CPP_MIN_LOG_LEVEL) hidden.

    Anything else it prints on stderr is passed on.

    Args:
        before_first_op: callable(tf) or None. Runs after the import, before TensorFlow
            initializes its runtime (thread and GPU settings must be made then).
    """
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            if before_first_op is not None:
                before_first_op(tf)
            tf.config.list_physical_devices()
            tf.constant(0.0) + 1.0
            tf.get_logger().setLevel("ERROR")  # e.g. retracing notes: not the user's concern
        except Exception:  # noqa: BLE001 - reported by the import that follows
            pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        for line in capture.read().decode(errors="replace").splitlines():
            if line.strip() and not _TF_STARTUP_NOISE.match(line):
                print(line, file=sys.stderr)


def limit_threads(threads: int) -> None:
    """Cap TensorFlow's threads (call before TensorFlow runs anything) so workers share cores."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def configure(tf: ModuleType) -> None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialized in this process: the environment variables still apply
        share_gpus(tf)

    import_tensorflow_quietly(before_first_op=configure)


def share_gpus(tf: ModuleType) -> None:
    """Let several workers share a GPU: allocate its memory as needed (before first use)."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # the device was already initialized in this process


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (what `training.precision: mixed` resolves by)."""
    import_tensorflow_quietly()  # the first look for devices may print CUDA's start-up noise
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
