"""Stop signals and the end of a run (issue 23): `range-test` stops cleanly on SIGTERM / SIGHUP, a
second SIGTERM does not cut the first one's clean-up short, and the summary names only files that exist."""

import copy
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from helpers import TINY_EXPERIMENT
from kfold_clr.execution.experiment import Results
from kfold_clr.execution.progress import run_summary
from kfold_clr.process import interrupt
from kfold_clr.storage.lock import RunLock


def start(verb, path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "kfold_clr", verb, str(path), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.02)
    assert condition(), f"not within {seconds} s"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_range_test_stops_on_sigterm_and_sighup_and_releases_its_lock(tmp_path, signum, code):
    """It died with -15 and left `.lock.owner`; now it ends as `run` does."""
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["range_test"] = {"min_lr": 1e-6, "max_lr": 1e-5, "iterations": 1_000_000}  # hours at full length
    experiment["output"] = {"dir": str(tmp_path / "results")}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    process = start("range-test", path)
    owner = tmp_path / "results" / ".lock.owner"
    wait_for(owner.exists)
    time.sleep(1.5)  # into the sweep
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err[-2000:]
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err
    assert not owner.exists()
    RunLock(tmp_path / "results").acquire().release()


@pytest.mark.slow
def test_a_second_sigterm_does_not_skip_the_table_rebuild(tmp_path):
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["training"]["epochs"] = 20
    experiment["output"] = {"dir": str(tmp_path / "results")}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    out = tmp_path / "results"
    process = start("run", path)
    wait_for(lambda: any((out / "folds").glob("*/*.json")) if (out / "folds").exists() else False)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "tables not rebuilt" not in err and "Traceback" not in err
    records = list((out / "folds").glob("*/*.json"))
    assert len(pd.read_csv(out / "folds.csv")) == len(records) >= 1
    assert (out / "report.md").is_file()
    assert json.loads((out / "meta.json").read_text())["runs"][-1]["outcome"] == "interrupted (SIGTERM)"


def test_the_second_signal_is_held_and_the_third_stops(monkeypatch):
    raised = []
    with interrupt.watching():
        for _ in range(3):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs at the next bytecode boundary
            except interrupt.Interrupted as stop:
                raised.append(stop.exit_code)
            else:
                raised.append(None)
    assert raised == [143, None, 143]


def test_the_summary_never_points_to_a_report_that_was_not_written(tmp_path):
    """`epochs: 1e12` failed every fold with MemoryError while the summary pointed to report.md."""
    folds = pd.DataFrame({"strategy": ["a", "a"], "repeat": [0, 0], "fold": [0, 1], "status": ["failed"] * 2,
                          "error": ["MemoryError: Unable to allocate"] * 2})
    (tmp_path / "folds.csv").write_text(folds.to_csv(index=False))
    text = run_summary(Results(tmp_path, folds, pd.DataFrame()), seconds=3, trained=2)
    assert "report:  none written" in text and "report.md" not in text
    for path in re.findall(r"(/\S+)", text):
        assert pathlib.Path(path).exists(), path
    (tmp_path / "report.md").write_text("# report\n")
    assert f"report:  {tmp_path / 'report.md'}" in run_summary(Results(tmp_path, folds, pd.DataFrame()),
                                                                 seconds=3, trained=2)
