"""Benchmark: fused against sequential folds for a small CNN on digits, and fused per-fold range tests.

Every experiment variant runs as its own `python -m kfold_clr run ... --fresh -q` process, timed
from the outside (imports, data, model building, tracing, training and the report included),
sequential (`execution.fused_folds: false`) and fused (`true`) side by side in one run, with
the mean validation accuracy of each so no speed comes from doing less work:

- a CNN on digits (8 x 8 x 1, two conv layers), 5 folds x 2 strategies (CLR, step decay);
- the same with batch norm;
- the same with a snapshot-ensemble strategy in place of step decay.

The range tests run in two fresh processes, timed inside them (model building and tracing
included): one range test on one fold, and the 5 per-fold range tests fused as one sweep.

    python benchmarks/bench_fused_cnn.py [--repeats 1]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

CNN = {
    "name": "bench-cnn",
    "seed": 0,
    "data": {"source": "sklearn", "name": "digits", "image_shape": [8, 8, 1]},
    "model": {"kind": "cnn", "filters": [16, 32], "kernel_size": 3, "hidden": [64]},
    "training": {"epochs": 20, "batch_size": 32, "optimizer": {"name": "sgd", "momentum": 0.9}},
    "cv": {"splitter": "stratified", "n_splits": 5},
    "strategies": {
        "clr": {"schedule": "clr", "base_lr": 0.005, "max_lr": 0.05, "step_size_epochs": 2.5},
        "step_decay": {"schedule": "step", "lr": 0.05, "factor": 0.5, "every_epochs": 4},
    },
}
SNAPSHOTS = {"schedule": "clr", "base_lr": 0.005, "max_lr": 0.05, "step_size_epochs": 2.5,
             "snapshots": {"keep": 2}}
RANGE_TEST = {"min_lr": 1e-4, "max_lr": 10.0}

RANGE_TEST_SCRIPT = '''
import sys, time, yaml
from kfold_clr.planning.bounds import range_test_on_split, range_test_plan
from kfold_clr.training.fused.range_tests import fused_range_tests
from kfold_clr.planning.preflight import prepare
from kfold_clr.training.trainer import PreparedFolds

config, dataset, splits, _ = prepare(yaml.safe_load(open(sys.argv[1])))
started = time.perf_counter()
if sys.argv[2] == "one":
    results = [range_test_on_split(config, dataset, range_test_plan(config, splits[0]))]
else:
    results = fused_range_tests(config, dataset, [range_test_plan(config, s) for s in splits],
                                PreparedFolds(dataset, splits, config.data))
print(time.perf_counter() - started, len(results), sum(len(r.history) for r in results))
'''


def run_child(command, env):
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=env, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def _accuracy(directory):
    import pandas as pd

    folds = pd.read_csv(Path(directory) / "folds.csv")
    return folds.groupby("strategy")["val_accuracy"].mean(), folds["fused"].all()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per variant (the fastest counts)")
    args = parser.parse_args(argv)
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    python, repeats = sys.executable, max(1, args.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def experiment(name, fused, **changes):
            config = json.loads(json.dumps(CNN))
            config["model"].update(changes.get("model", {}))
            config["strategies"].update(changes.get("strategies", {}))
            for drop in changes.get("drop", ()):
                del config["strategies"][drop]
            config["execution"] = {"fused_folds": fused}
            config["output"] = {"dir": str(tmp / name / "results")}
            path = tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            seconds = min(run_child([python, "-m", "kfold_clr", "run", str(path), "--fresh", "-q"], env)[0]
                          for _ in range(repeats))
            accuracy, all_fused = _accuracy(tmp / name / "results")
            assert all_fused == fused, f"{name}: expected fused={fused}"
            print(f"  ran {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
            return seconds, accuracy

        variants = {
            "CNN": {},
            "CNN + batch norm": {"model": {"batch_norm": True}},
            "CNN + snapshots": {"strategies": {"clr_snapshots": SNAPSHOTS}, "drop": ["step_decay"]},
        }
        for label, changes in variants.items():
            slug = label.replace(" + ", "_").replace(" ", "_").lower()
            sequential = experiment(f"{slug}_sequential", False, **changes)
            fused = experiment(f"{slug}_fused", True, **changes)
            rows.append((label, sequential, fused))

        range_yaml = tmp / "range.yaml"
        config = json.loads(json.dumps(CNN))
        config["range_test"] = RANGE_TEST
        config["output"] = {"dir": str(tmp / "range" / "results")}
        range_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
        script = tmp / "range_tests.py"
        script.write_text(RANGE_TEST_SCRIPT)
        timings = {}
        for mode in ("one", "fused"):
            runs = [run_child([python, str(script), str(range_yaml), mode], env)[1].split() for _ in range(repeats)]
            timings[mode] = min(runs, key=lambda r: float(r[0]))

    print(f"\nfused vs sequential folds: CNN on digits (8x8x1, conv 16-32, dense 64), 5 stratified folds x "
          f"2 strategies, 20 epochs, batch 32, SGD momentum 0.9; whole processes (best of {repeats}; "
          f"{os.cpu_count()} CPUs)")
    print(f"{'variant':18} {'sequential s':>12} {'fused s':>8} {'ratio':>6}  mean val accuracy per strategy "
          "(sequential / fused, pp difference)")
    for label, (seq_s, seq_acc), (fused_s, fused_acc) in rows:
        accuracy = ", ".join(f"{name} {seq_acc[name]:.4f} / {fused_acc[name]:.4f} "
                             f"({100 * (fused_acc[name] - seq_acc[name]):+.2f})" for name in seq_acc.index)
        print(f"{label:18} {seq_s:12.1f} {fused_s:8.1f} {fused_s / seq_s:6.2f}  {accuracy}")
    one, fused = (float(timings[m][0]) for m in ("one", "fused"))
    print(f"\nrange tests ({RANGE_TEST['min_lr']:g} to {RANGE_TEST['max_lr']:g}, 100 updates each), "
          "timed inside a fresh process:")
    print(f"  one range test (1 fold)          {one:6.1f} s")
    print(f"  5 per-fold range tests, fused    {fused:6.1f} s   ratio {fused / one:.2f}")
    print("\ntargets: fused / sequential <= 0.5 (goal 0.3), mean accuracy within 1 pp; "
          "5 fused range tests <= 2x one")
    worst = max(abs(float(np.max(np.abs(f[1] - s[1])))) for _, s, f in rows)
    print(f"  largest |fused - sequential| mean accuracy: {100 * worst:.2f} pp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
