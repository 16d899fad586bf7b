import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

TINY_EXPERIMENT = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "synthetic", "name": "classification",
             "params": {"n_samples": 90, "n_features": 6, "n_informative": 4, "n_classes": 3}},
    "model": {"kind": "mlp", "hidden": [8]},
    "training": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "sgd", "momentum": 0.9}},
    "cv": {"splitter": "stratified", "n_splits": 3, "n_repeats": 1, "shuffle": True},
    # Tests of the runner's machinery (resume, kills, executors) train fold by fold; the fused
    # path and the `auto` default have their own tests.
    "execution": {"fused_folds": False},
    "strategies": {
        "constant": {"schedule": "constant", "lr": 0.05},
        "clr_reset": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                      "across_folds": "reset"},
        "clr_continue": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 3,
                         "across_folds": "continue"},
    },
}


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


@pytest.fixture
def write_yaml(tmp_path):
    """Write a dict (or raw text) as a YAML file under tmp_path and return its path."""
    import yaml

    def write(content, name="experiment.yaml"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
