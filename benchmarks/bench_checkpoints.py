"""Benchmark: what checkpoints cost while training, and what they save when a run is killed.

A small CNN on digits (8 x 8 x 1), 5 folds x 2 strategies trained as one fused job (the unit
of loss before checkpoints: a kill threw the whole job away). Each variant runs in its own
fresh process.

- Overhead: the same run with `execution.checkpoint_every: 0` (no checkpoints) and with a
  small interval, side by side: training seconds (the fused job's), seconds spent in the
  checkpoint code at epoch ends (timed inside the process: gathering the state, writing it, the
  checks), how many were saved, and the wall time; each variant run twice, the fastest kept.
- Resume: a run with the small interval killed with SIGKILL (as the out-of-memory killer
  does: no chance to save) at about 60% of its training time, then rerun: its wall time
  against an uninterrupted run's startup + the 40% still to do + one interval. A run stopped
  with SIGTERM (`docker stop`) saves at the epoch's end before it exits; its rerun is timed too.

    python benchmarks/bench_checkpoints.py [--every 2] [--epochs 30] [--repeats 2]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from kfold_clr.storage.ownership import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fused_cnn import CNN as FUSED_CNN  # noqa: E402  the same CNN, fused, with snapshots

CNN = {**json.loads(json.dumps(FUSED_CNN)), "name": "bench-checkpoints", "execution": {"fused_folds": True}}
CNN["training"]["epochs"] = 30
CNN["strategies"]["clr"]["snapshots"] = {"keep": 2}

# Runs the experiment in this fresh process, timing the checkpoint code at every epoch's end
# (gathering the state, writing the file, and the checks when nothing is saved).
TIMED_RUN = '''
import json, sys, time
from kfold_clr.storage import checkpoints
from kfold_clr.execution.experiment import run_experiment

spent, saves = [], []
original_end, original_save = checkpoints.Checkpointer.epoch_end, checkpoints.Checkpointer.save

def epoch_end(self, gather, **kwargs):
    started = time.perf_counter()
    try:
        return original_end(self, gather, **kwargs)
    finally:
        spent.append(time.perf_counter() - started)

def save(self, state):
    saves.append(1)
    return original_save(self, state)

checkpoints.Checkpointer.epoch_end, checkpoints.Checkpointer.save = epoch_end, save
started = time.perf_counter()
results = run_experiment(sys.argv[1], verbosity=0, resume=False)
print(json.dumps({"wall": time.perf_counter() - started, "saves": len(saves), "save_seconds": sum(spent),
                  "accuracy": float(results.folds["val_accuracy"].mean())}))
'''


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}


def _write(folder, name, every, epochs):
    experiment = json.loads(json.dumps(CNN))
    experiment["training"]["epochs"] = epochs
    experiment["execution"]["checkpoint_every"] = every
    experiment["output"] = {"dir": str(folder / name)}
    path = folder / f"{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(experiment))  # never through a link planted there
    return path, folder / name


def _training_seconds(results):
    """The training time of the run's jobs (a fused job's time is shared by its folds' `fit_seconds`)."""
    return float(pd.read_csv(results / "folds.csv")["fit_seconds"].sum())


def timed_run(path, results):
    done = subprocess.run([sys.executable, "-c", TIMED_RUN, str(path)], env=_env(), capture_output=True,
                          text=True, check=True)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "training": _training_seconds(results)}


def cli_run(path, *, fresh=False, stop_after=None, stop_with=signal.SIGKILL):
    """Wall seconds of `kfold-clr run`, stopped with `stop_with` after `stop_after` seconds (None: to the end)."""
    command = [sys.executable, "-m", "kfold_clr", "run", str(path), "-q"] + (["--fresh"] if fresh else [])
    started = time.perf_counter()
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if stop_after is not None:
        try:
            process.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            process.send_signal(stop_with)
    process.wait()
    return time.perf_counter() - started, process.returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=2.0, help="the small checkpoint interval (seconds)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each overhead variant (fastest kept)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        off_path, off_results = _write(folder, "off", 0, args.epochs)
        on_path, on_results = _write(folder, "on", args.every, args.epochs)
        runs = {"off": [], "on": []}
        for _ in range(args.repeats):  # alternated, the fastest of each kept: less timing noise
            runs["off"].append(timed_run(off_path, off_results))
            runs["on"].append(timed_run(on_path, on_results))
        off, on = (min(runs[name], key=lambda run: run["training"]) for name in ("off", "on"))
        print(f"overhead ({args.epochs} epochs, 5 folds x 2 strategies fused, checkpoint_every 0 vs {args.every:g} s)")
        print(f"  {'':24}{'every 0':>12}{f'every {args.every:g} s':>14}")
        print(f"  {'training seconds':24}{off['training']:12.2f}{on['training']:14.2f}")
        print(f"  {'checkpoints saved':24}{off['saves']:12d}{on['saves']:14d}")
        print(f"  {'seconds in checkpoints':24}{off['save_seconds']:12.3f}{on['save_seconds']:14.3f}")
        print(f"  {'wall seconds':24}{off['wall']:12.2f}{on['wall']:14.2f}")
        print(f"  {'mean val_accuracy':24}{off['accuracy']:12.4f}{on['accuracy']:14.4f}")
        print(f"  checkpoints cost {100 * on['save_seconds'] / on['training']:.2f}% of the training time "
              f"({1000 * on['save_seconds'] / max(on['saves'], 1):.1f} ms a checkpoint); training time "
              f"{100 * (on['training'] / off['training'] - 1):+.1f}% (timing noise included)")

        full, _ = cli_run(on_path, fresh=True)
        training = _training_seconds(on_results)
        startup = full - training
        print(f"\nresume (uninterrupted: {full:.1f} s wall, {training:.1f} s of it training, {startup:.1f} s startup)")
        for name, stop_with in (("SIGKILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
            killed_at = startup + 0.6 * training
            _, code = cli_run(on_path, fresh=True, stop_after=killed_at, stop_with=stop_with)
            saved = sorted((on_results / "checkpoints").glob("*.ckpt.npz"))
            rerun, _ = cli_run(on_path)
            bound = startup + 0.4 * training + args.every
            print(f"  {name} at {killed_at:.1f} s (exit {code}, {len(saved)} checkpoint(s) left): rerun "
                  f"{rerun:.1f} s; startup + 40% + one interval = {bound:.1f} s; a fresh start = {full:.1f} s")


if __name__ == "__main__":
    main()
