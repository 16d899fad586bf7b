"""Code behind a model (issue 23): the helper modules a factory imports and the globals a notebook
model function reads are part of a fold's fingerprint; a change is refused, naming what changed."""

import copy
import importlib
import sys
import textwrap
import uuid

import numpy as np
import pytest
import yaml

from helpers import TINY_EXPERIMENT
from kfold_clr.api import cross_validate
from kfold_clr.cli.main import main
from kfold_clr.errors import ResultsError
from kfold_clr.storage import codeprint

CONSTANT = {"schedule": "constant", "lr": 0.05}
STEP = {"schedule": "step", "lr": 0.05, "factor": 0.5, "every_epochs": 1}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A factory module importing a helper module, both on sys.path under fresh names."""
    tag = uuid.uuid4().hex[:8]
    names = {"models": f"i23_models_{tag}", "helper": f"i23_helper_{tag}"}
    (tmp_path / f"{names['helper']}.py").write_text("WIDTH = 8\n")
    (tmp_path / f"{names['models']}.py").write_text(textwrap.dedent(f"""
        import keras
        import numpy as np  # a library: not fingerprinted
        from {names['helper']} import WIDTH

        def small(input_shape, n_outputs):
            inputs = keras.Input(shape=input_shape)
            hidden = keras.layers.Dense(WIDTH, activation="relu")(inputs)
            return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(hidden))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, names
    for name in names.values():
        sys.modules.pop(name, None)


def test_code_files_follow_local_imports_but_not_libraries(package):
    folder, names = package
    files = codeprint.code_files(f"{names['models']}:small")
    assert sorted(files) == sorted(f"code file {folder / (name + '.py')}" for name in names.values())


def test_editing_a_helper_the_factory_imports_refuses_old_folds(package, tmp_path, capsys):
    """Issue 23: edit the helper, rerun with one more strategy: the old strategy's folds were kept
    and compared with the new ones; now the run is refused, naming the helper file."""
    folder, names = package
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment.update(model={"factory": f"{names['models']}:small"}, strategies={"constant": CONSTANT},
                      output={"dir": str(tmp_path / "results")})
    experiment["training"]["epochs"] = 1
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path), "-q"]) == 0
    (folder / f"{names['helper']}.py").write_text("WIDTH = 9\n")
    experiment["strategies"]["step"] = STEP
    path.write_text(yaml.safe_dump(experiment))
    capsys.readouterr()
    assert main(["run", str(path), "-q"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("kfold-clr: error: output.dir:") and "strategy 'constant'" in error
    assert f"(code file {folder / names['helper']}.py changed)" in error and "--fresh" in error
    assert main(["run", str(path), "-q", "--fresh"]) == 0


def test_function_parts_name_the_globals_and_closures_a_function_reads():
    namespace = {"WIDTH": 8, "unused": 1, "np": np}
    exec("def make(shape, n):\n    return np.zeros(WIDTH + n)\n", namespace)  # noqa: S102 - a notebook cell

    def outer(depth):
        def model(shape, n):
            return namespace["make"](shape, n) * depth
        return model

    parts = codeprint.function_parts(namespace["make"])
    assert "global WIDTH read by make" in parts and not any("unused" in label for label in parts)
    namespace["WIDTH"] = 9
    assert codeprint.function_parts(namespace["make"])["global WIDTH read by make"] != parts[
        "global WIDTH read by make"]
    labels = codeprint.function_parts(outer(2))
    assert "closure variable depth of test_function_parts_name_the_globals_and_closures_a_function_reads." \
           "<locals>.outer.<locals>.model" in labels
    assert codeprint.function_parts(outer(2)) == labels != codeprint.function_parts(outer(3))


@pytest.fixture
def notebook(tmp_path, monkeypatch):
    """A 'notebook' module: a model function that reads the global UNITS."""
    name = f"i23_notebook_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import keras

        UNITS = 8

        def make_model(input_shape, n_outputs):
            inputs = keras.Input(shape=input_shape)
            hidden = keras.layers.Dense(UNITS, activation="relu")(inputs)
            return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(hidden))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module(name)
    sys.modules.pop(name, None)


def test_a_notebook_global_the_model_reads_refuses_old_folds_and_names_fresh(notebook, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)).astype("float32"), np.arange(60) % 2
    common = dict(cv=2, epochs=1, batch_size=16, verbose=0, output_dir=tmp_path / "results")
    cross_validate(notebook.make_model, x, y, strategies={"constant": CONSTANT}, **common)
    notebook.UNITS = 9  # the user changes a global in another cell
    with pytest.raises(ResultsError) as refused:
        cross_validate(notebook.make_model, x, y, strategies={"constant": CONSTANT, "step": STEP}, **common)
    message = str(refused.value)
    assert "global UNITS read by make_model changed" in message
    assert "call again with fresh=True" in message and "--fresh" not in message
    again = cross_validate(notebook.make_model, x, y, strategies={"constant": CONSTANT, "step": STEP},
                           fresh=True, **common)
    assert len(again.folds) == 4
