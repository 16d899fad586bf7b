"""Where a kfold_clr run's wall time goes: `kfold-clr run` with wall-clock timers around its parts.

    python benchmarks/time_parts.py run EXPERIMENT.yaml [kfold-clr run's options, e.g. --fresh -q]

Runs the command line as `python -m kfold_clr` would, in this process, and prints, after the
run, the total wall time and each timed part's seconds and calls, longest first: importing
kfold_clr, TensorFlow and Keras, the checks before training (`preflight.prepare`), `fused_folds: auto` choosing a path
(`jobs.fusion_groups`, and in it `measure.time_paths`), every fold (`trainer.train_fold`, and
in it Keras's `fit`, the per-epoch validation passes and the final scores on the training rows),
and the report. Parts nest, so their seconds do not add up to the total. Timers, not a
profiler: cProfile doubles the cost of Python-heavy parts. The run writes what
`kfold-clr run` writes, nothing else.
"""

from __future__ import annotations

import collections
import functools
import importlib
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PARTS = [("kfold_clr.planning.preflight", "prepare"),
         ("kfold_clr.planning.jobs", "fusion_groups"),
         ("kfold_clr.training.fused.measure", "time_paths"),
         ("kfold_clr.training.trainer", "train_fold"),
         ("kfold_clr.training.trainer", "_final_scores"),
         ("kfold_clr.training.validation_pass", "score"),
         ("keras.src.backend.tensorflow.trainer", "TensorFlowTrainer.fit"),
         ("kfold_clr.report", "build_report")]

seconds, calls = collections.defaultdict(float), collections.Counter()


def timed(module_name: str, qualified_name: str) -> None:
    """Replace `module_name`.`qualified_name` (a function, or Class.method) by a timed wrapper."""
    owner = importlib.import_module(module_name)
    *classes, name = qualified_name.split(".")
    for class_name in classes:
        owner = getattr(owner, class_name)
    function = getattr(owner, name)
    label = f"{module_name.rsplit('.', 1)[-1]}.{qualified_name}"

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - started
            calls[label] += 1

    setattr(owner, name, wrapper)


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    for module_name, qualified_name in PARTS:
        timed(module_name, qualified_name)
    from kfold_clr.cli.main import entry_point

    seconds["imports (kfold_clr, TensorFlow, Keras)"] = time.perf_counter() - started
    calls["imports (kfold_clr, TensorFlow, Keras)"] = 1

    sys.argv = ["kfold-clr", *argv]
    try:
        entry_point()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    print(f"\n{time.perf_counter() - started:8.2f} s  total (after Python's own start)", file=sys.stderr)
    for label, value in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"{value:8.2f} s  {calls[label]:4d} calls  {label}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
