"""benchmarks/time_parts.py: a run with timers around its parts prints each part once per call."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _parts(stderr):
    return {label: (float(value), int(count))
            for value, count, label in re.findall(r"^\s*([\d.]+) s\s+(\d+) calls\s+(.+)$", stderr, re.M)}


def test_time_parts_times_every_fold_and_keeps_the_exit_code(tmp_path, tiny_experiment, write_yaml):
    config = write_yaml(tiny_experiment)
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_parts.py"), "run", str(config), "-q"],
                               capture_output=True, text=True, check=False, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    parts = _parts(completed.stderr)
    folds = len(tiny_experiment["strategies"]) * tiny_experiment["cv"]["n_splits"]
    total = float(re.search(r"^\s*([\d.]+) s\s+total", completed.stderr, re.M).group(1))
    assert parts["preflight.prepare"][1] >= 1 and parts["report.build_report"][1] == 1
    assert parts["trainer.train_fold"][1] == folds  # fold by fold (`fused_folds: false`): one call per fold
    assert parts["trainer._final_scores"][1] == folds
    assert all(0 <= value <= total for value, _ in parts.values())
    assert (tmp_path / "results" / "folds.csv").is_file()

    report, victim = tmp_path / "results" / "report.md", tmp_path / "victim.md"
    victim.write_text("user data")
    report.unlink()
    report.symlink_to(victim)  # the run's writes go through kfold_clr's guard: a planted link is refused
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_parts.py"), "run", str(config), "-q"],
                               capture_output=True, text=True, check=False, cwd=tmp_path)
    assert "report not written" in completed.stderr and "symbolic link" in completed.stderr, completed.stderr[-2000:]
    assert victim.read_text() == "user data" and report.is_symlink()

    bad = write_yaml({**tiny_experiment, "seed": "x"}, name="bad.yaml")
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_parts.py"), "run", str(bad)],
                               capture_output=True, text=True, check=False, cwd=tmp_path)
    assert completed.returncode == 2 and "seed" in completed.stderr
