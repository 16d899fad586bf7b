"""An MLflow server that does not answer costs a run seconds, not minutes (issue 23). Only loopback
addresses are used: a port just closed (refused) and a socket that accepts and never answers."""

import copy
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from helpers import TINY_EXPERIMENT
from kfold_clr.storage import tracking

pytest.importorskip("mlflow")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_silent_server_fails_the_probe_within_its_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts the connection; nobody ever answers
        started = time.perf_counter()
        with pytest.raises(ConnectionError, match=r"tracking server http://127\.0\.0\.1:\d+ does not answer "
                                                  r"within 0\.5 s"):
            tracking._probe_server(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        assert time.perf_counter() - started < 3


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_one_warning_and_the_run_goes_on(tmp_path):
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["strategies"] = {"constant": experiment["strategies"]["constant"]}
    experiment["training"]["epochs"] = 1
    experiment["output"] = {"dir": str(tmp_path / "results"),
                            "mlflow": {"tracking_uri": f"http://127.0.0.1:{closed_port()}"}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kfold_clr", "run", str(path), "-q"], capture_output=True,
                          text=True, timeout=90, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and "MLflow logging stopped" in warnings[0] and "does not answer" in warnings[0]
    assert (tmp_path / "results" / "report.md").is_file()
    assert seconds < 60, seconds  # MLflow's own retries took about 4 minutes
