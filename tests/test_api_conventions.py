"""cross_validate follows scikit-learn's conventions: verbose=0, n_jobs, fresh=True named in refusals,
and keyword arguments that never silently override a settings mapping (issue 26)."""

import inspect

import keras
import numpy as np
import pytest
from sklearn.datasets import make_classification

import kfold_clr
from kfold_clr.errors import ResultsError
from kfold_clr.execution import experiment
from kfold_clr.storage import provenance

STRATEGIES = {"constant": {"schedule": "constant", "lr": 0.05}}


def make_model(input_shape, n_outputs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(inputs))


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
    return make_classification(n_samples=60, n_features=4, n_informative=3, n_redundant=0, n_classes=2,
                               random_state=0)


@pytest.fixture
def captured(monkeypatch):
    """The experiment cross_validate hands to run_experiment, without training anything."""
    seen = {}

    def fake_run(source, **kwargs):
        seen.update(experiment=source, **kwargs)
        raise KeyboardInterrupt("captured")

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    return seen


def build(x, y, seen, tmp_path, **kwargs):
    kwargs.setdefault("output_dir", tmp_path / "out")
    with pytest.raises(KeyboardInterrupt, match="captured"):
        kfold_clr.cross_validate(kwargs.pop("model", make_model), x, y, strategies=STRATEGIES, epochs=2,
                                 batch_size=16, **kwargs)
    return seen["experiment"]


def test_verbose_is_zero_by_default_as_in_scikit_learn(data, captured, tmp_path):
    assert inspect.signature(kfold_clr.cross_validate).parameters["verbose"].default == 0
    build(*data, captured, tmp_path)
    assert captured["verbosity"] == 0


@pytest.mark.parametrize("keywords, settings, message", [
    ({"epochs": 20}, {"training": {"epochs": 3}},
     r"`epochs` and `training` disagree: training.epochs is 20 from `epochs` but 3 in `training`"),
    ({"scale": "minmax"}, {"data": {"scale": "none"}}, r"`scale` and `data` disagree: data.scale is 'minmax'"),
    ({"optimizer": "adam"}, {"training": {"optimizer": {"name": "sgd"}}},
     r"`optimizer` and `training` disagree"),
    ({"n_jobs": 1}, {"execution": {"executor": "ray"}}, r"`n_jobs` and `execution` disagree"),
    ({"tensorboard": True}, {"output": {"tensorboard": False}}, r"`tensorboard` and `output` disagree"),
])
def test_a_keyword_and_a_settings_mapping_that_disagree_are_refused(data, tmp_path, keywords, settings, message):
    x, y = data
    arguments = {"epochs": 2, "batch_size": 16, **keywords}
    with pytest.raises(ValueError, match=message):
        kfold_clr.cross_validate(make_model, x, y, strategies=STRATEGIES, output_dir=tmp_path / "out",
                                 **arguments, **settings)
    assert not (tmp_path / "out").exists()


def test_settings_may_set_what_a_keyword_leaves_at_its_default_or_repeat_it(data, captured, tmp_path):
    built = build(*data, captured, tmp_path, output_dir=None, data={"scale": "none"},
                  training={"epochs": 2, "metrics": ["accuracy"]}, cv={"n_repeats": 2},
                  output={"dir": str(tmp_path / "out")}, optimizer={"name": "sgd", "momentum": 0.5})
    assert built["data"]["scale"] == "none" and built["training"]["epochs"] == 2
    assert built["training"]["metrics"] == ["accuracy"] and built["training"]["optimizer"]["momentum"] == 0.5
    assert built["cv"] == {"splitter": "auto", "n_splits": 5, "n_repeats": 2}
    assert built["name"] == "notebook" and built["seed"] == 0 and built["output"]["tensorboard"] is False
    assert built["output"]["dir"] == str(tmp_path / "out")  # output={"dir": ...} does what output_dir= does


@pytest.mark.parametrize("n_jobs, execution", [(None, {}), (1, {"executor": "local"}),
                                               (3, {"executor": "processes", "workers": 3})])
def test_n_jobs_maps_to_the_executor(data, captured, tmp_path, n_jobs, execution):
    built = build(*data, captured, tmp_path, model="pkg.mod:fn", n_jobs=n_jobs)
    assert built["execution"] == execution


def test_n_jobs_minus_one_is_one_worker_per_core(data, captured, tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    built = build(*data, captured, tmp_path, model="pkg.mod:fn", n_jobs=-1)
    assert built["execution"] == {"executor": "processes", "workers": 6}


@pytest.mark.parametrize("n_jobs", [0, -2, 1.5, True, "2"])
def test_a_bad_n_jobs_is_a_value_error(data, tmp_path, n_jobs):
    with pytest.raises(ValueError, match=rf"Argument `n_jobs` must be None, -1 .*Received: n_jobs={n_jobs!r}"):
        kfold_clr.cross_validate("pkg.mod:fn", *data, strategies=STRATEGIES, epochs=2, batch_size=16,
                                 output_dir=tmp_path / "out", n_jobs=n_jobs)


def test_workers_cannot_see_a_notebook_model_and_the_message_says_n_jobs(data, tmp_path):
    with pytest.raises(ValueError, match=r"cannot see a model defined in this notebook; use 'local' \(n_jobs=None\)"):
        kfold_clr.cross_validate(make_model, *data, strategies=STRATEGIES, epochs=2, batch_size=16,
                                 output_dir=tmp_path / "out", n_jobs=2)


def test_every_refusal_of_old_results_names_fresh_true(data, tmp_path, monkeypatch, capsys):
    x, y = data

    def call(x, **kwargs):
        return kfold_clr.cross_validate(make_model, x, y, strategies=STRATEGIES, epochs=1, batch_size=16, cv=2,
                                        output_dir=tmp_path / "out", **kwargs)

    first = call(x)
    assert "results" in capsys.readouterr().err  # verbose=0 still prints the closing summary
    changed = x.copy()
    changed[0, 0] += 1.0
    with pytest.raises(ResultsError) as refused:
        call(changed)
    assert "call again with fresh=True" in str(refused.value) and "--" not in str(refused.value)
    monkeypatch.setattr(provenance, "__version__", "99.0")
    with pytest.raises(ResultsError) as refused:
        call(x)
    message = str(refused.value)
    assert "fresh=True" in message and "accept_versions=True" in message and "--" not in message
    kept = call(x, accept_versions=True)  # the folds of 0.x are kept: nothing trained again
    np.testing.assert_array_equal(kept.folds["fit_seconds"], first.folds["fit_seconds"])
    again = call(changed, fresh=True)
    assert (again.folds["status"] == "ok").all() and len(again.folds) == 2
