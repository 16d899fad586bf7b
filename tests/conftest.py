import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from helpers import TINY_EXPERIMENT


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every test's caches (notebook arrays, decoded images, backbone features) in a folder of
    the session's own, never the user's ~/.cache/kfold_clr."""
    previous = os.environ.get("KFOLD_CLR_CACHE")
    os.environ["KFOLD_CLR_CACHE"] = str(tmp_path_factory.mktemp("kfold_clr_cache"))
    yield
    if previous is None:
        os.environ.pop("KFOLD_CLR_CACHE", None)
    else:
        os.environ["KFOLD_CLR_CACHE"] = previous


@pytest.fixture
def tiny_experiment(tmp_path):
    """A tiny experiment dict (seconds to run) writing under tmp_path."""
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["output"] = {"dir": str(tmp_path / "results")}
    return experiment


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """`Results` of the tiny experiment, run once per session for the tests that only read them."""
    from kfold_clr.execution.experiment import run_experiment

    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["output"] = {"dir": str(tmp_path_factory.mktemp("tiny_run") / "results")}
    return run_experiment(experiment, verbosity=0)


@pytest.fixture
def write_yaml(tmp_path):
    """Write a dict (or raw text) as a YAML file under tmp_path and return its path."""
    import yaml

    def write(content, name="experiment.yaml"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
