"""Faults: kills, Ctrl-C, full disks and unwritable directories never cost finished work."""

import copy
import errno
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from helpers import TINY_EXPERIMENT
from kfold_clr.cli.main import main
from kfold_clr.errors import ResultsError
from kfold_clr.execution.experiment import run_experiment

pytestmark = pytest.mark.slow
SCORES = ["strategy", "repeat", "fold", "status", "val_loss", "val_accuracy", "train_loss", "iterations"]


def _default_sigint():
    # A shell's background job starts with SIGINT ignored; Python keeps it so. Restore the
    # default, so the child turns Ctrl-C into KeyboardInterrupt as a terminal user's run would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "kfold_clr", "run", str(path), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def records(out):
    return sorted(p for p in (out / "folds").glob("*/*.json")) if (out / "folds").exists() else []


def test_ten_random_kills_then_resume_equals_an_uninterrupted_run(tiny_experiment, write_yaml, tmp_path):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["training"]["epochs"] = 3
    experiment["cv"]["n_repeats"] = 3  # 27 folds: enough that ten kills each cut one short
    reference = copy.deepcopy(experiment)
    reference["output"]["dir"] = str(tmp_path / "reference")
    started = time.time()
    expected = run_experiment(reference, verbosity=0).folds
    total = len(expected)
    fold_seconds = (time.time() - started) / total

    path, out, rng = write_yaml(experiment), tmp_path / "results", random.Random(7)
    interrupted, counts = 0, []
    for _ in range(10):
        before = len(records(out))
        process = start(path)
        # Wait until this process has finished a fold of its own (so training is under way and
        # the kill cannot land during start-up), then kill it somewhere in the next fold.
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None and len(records(out)) == before:
            time.sleep(0.02)
        assert time.time() < deadline, "no fold finished within 120 s"
        time.sleep(rng.uniform(0.0, 1.5 * fold_seconds))
        process.kill()
        process.communicate()
        done = len(records(out))
        counts.append((done, process.returncode))
        if process.returncode == -signal.SIGKILL and 0 < done < total:
            interrupted += 1
        for record in records(out):  # every record on disk is whole
            pd.read_json(record, typ="series")
    assert interrupted >= 8, f"only {interrupted} of 10 kills landed mid-run: {counts}"
    assert main(["run", str(path), "-q"]) == 0
    resumed = pd.read_csv(out / "folds.csv")
    assert len(resumed) == total and not resumed.duplicated(["strategy", "repeat", "fold"]).any()
    pd.testing.assert_frame_equal(resumed[SCORES], expected[SCORES], check_exact=False, rtol=1e-6)
    assert not list(out.glob(".*.tmp")) and not list(out.glob("folds/*/.*.tmp"))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signals_save_finished_folds_rebuild_the_report_and_resume(tiny_experiment, write_yaml, tmp_path,
                                                                       signum, code):
    """Ctrl-C, `docker stop` / Slurm / Kubernetes (SIGTERM) and a closed terminal (SIGHUP)."""
    from kfold_clr.storage.lock import RunLock

    experiment = copy.deepcopy(tiny_experiment)
    experiment["training"]["epochs"] = 20
    path, out = write_yaml(experiment), tmp_path / "results"
    process = start(path)
    deadline = time.time() + 120
    while time.time() < deadline and not records(out):
        time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert process.returncode == code, err[-2000:]
    assert f"interrupted ({name})" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err
    saved = pd.read_csv(out / "folds.csv")
    assert 1 <= len(saved) < 9 and (saved["status"] == "ok").all()
    assert (out / "report.md").exists() and (out / "summary.csv").exists()
    runs = json.loads((out / "meta.json").read_text())["runs"]
    assert runs[-1]["outcome"] == f"interrupted ({name})" and runs[-1]["finished"] is not None
    RunLock(out).acquire().release()  # the lock went with the process
    if signum != signal.SIGTERM:
        return  # resuming is the same after any of them: checked once, for SIGTERM
    assert main(["run", str(path), "-q"]) == 0
    resumed = pd.read_csv(out / "folds.csv")
    assert len(resumed) == 9 and (resumed["status"] == "ok").all()
    kept = resumed.merge(saved[["strategy", "repeat", "fold", "val_loss"]], on=["strategy", "repeat", "fold"])
    assert (kept["val_loss_x"] == kept["val_loss_y"]).all()  # finished folds were not trained again


def _fused_checkpointed(experiment):
    experiment = copy.deepcopy(experiment)
    experiment["training"]["epochs"] = 40
    experiment["execution"] = {"fused_folds": True, "checkpoint_every": 0.3}
    return experiment


@pytest.fixture(scope="module")
def fused_reference(tmp_path_factory):
    """The uninterrupted fused run (folds and history), run once for both ways of stopping it."""
    reference = _fused_checkpointed({**TINY_EXPERIMENT, "output": {}})
    reference["output"]["dir"] = str(tmp_path_factory.mktemp("fused_reference") / "results")
    folds = run_experiment(reference, verbosity=0).folds
    return folds, pd.read_csv(pathlib.Path(reference["output"]["dir"]) / "history.csv")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_fused_job_stopped_mid_way_resumes_from_its_checkpoint(tiny_experiment, write_yaml, tmp_path, stop,
                                                                 fused_reference):
    """Issue 23: one fused job holds every fold; a stop or a kill mid-way cost the whole job. Now
    SIGTERM saves at the epoch's end and SIGKILL loses at most one interval; the rerun goes on
    from the checkpoint and ends with the numbers of an uninterrupted run."""
    experiment = _fused_checkpointed(tiny_experiment)
    expected, reference_history = fused_reference

    path, out = write_yaml(experiment), tmp_path / "results"
    process = start(path)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("checkpoints/*.ckpt.npz")):
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before its first checkpoint"
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == (143 if stop == signal.SIGTERM else -signal.SIGKILL), err[-2000:]
    assert not records(out)  # the one job had not finished: only its checkpoint holds its progress
    assert len(list(out.glob("checkpoints/*.ckpt.npz"))) == 1
    assert main(["run", str(path), "-q"]) == 0
    resumed = pd.read_csv(out / "folds.csv")
    history = pd.read_csv(out / "history.csv")
    pd.testing.assert_frame_equal(resumed[SCORES], expected[SCORES], check_exact=False, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(history, reference_history, check_exact=False, rtol=0, atol=1e-6)
    assert not list(out.glob("checkpoints/*"))


def test_full_disk_is_reported_and_earlier_results_stay_intact(tiny_experiment, monkeypatch):
    out = tiny_experiment["output"]["dir"]
    run_experiment(tiny_experiment, only=["constant"], verbosity=0)
    before = {p: p.read_bytes() for p in records(pd.io.common.Path(out))}

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ResultsError, match="No space left on device.*results written before are intact"):
        run_experiment(tiny_experiment, verbosity=0)
    monkeypatch.setattr(os, "fsync", real_fsync)
    after = {p: p.read_bytes() for p in records(pd.io.common.Path(out))}
    assert after == before  # nothing damaged, nothing half-written
    assert run_experiment(tiny_experiment, verbosity=0).n_failed == 0


def test_unwritable_output_directory_is_one_line_exit_2(tiny_experiment, write_yaml, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    experiment = copy.deepcopy(tiny_experiment)
    experiment["output"]["dir"] = str(blocker / "results")
    assert main(["run", str(write_yaml(experiment)), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("kfold-clr: error: output.dir:") and "cannot be written (Not a directory)" in err
