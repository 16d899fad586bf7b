"""Worker processes import the user's script again: a run started from its unguarded top level is
refused with one clear error before any process starts, instead of multiprocessing's tracebacks."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import sys
from kfold_clr.execution.executors import check_main_guard

def start():
    check_main_guard()
    print("started")

{body}
"""


@pytest.mark.parametrize(("body", "refused"), [
    ("start()", True),
    ("if __name__ == '__main__':\n    start()", False),
    ("if '__main__' == __name__:\n    if True:\n        start()", False),
    ("if __name__ == 'other':\n    pass\nstart()", True),
])
def test_a_run_from_the_top_level_of_a_script_is_refused_and_a_guarded_one_starts(tmp_path, body, refused):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(body=body))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    if refused:
        assert done.returncode != 0 and "started" not in done.stdout
        assert "if __name__ == \"__main__\":" in done.stderr and f"{script}" in done.stderr
    else:
        assert done.returncode == 0 and done.stdout.strip() == "started", done.stderr


def test_cross_validate_with_n_jobs_from_an_unguarded_script_fails_before_any_worker(tmp_path):
    (tmp_path / "factory.py").write_text(textwrap.dedent("""
        import keras
        def build(input_shape, n_outputs):
            inputs = keras.Input(input_shape)
            return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(inputs))
    """))
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        from sklearn.datasets import load_iris
        from kfold_clr import cross_validate
        x, y = load_iris(return_X_y=True)
        cross_validate("factory:build", x, y, strategies={{"c": {{"schedule": "constant", "lr": 0.01}}}},
                       epochs=1, batch_size=16, cv=2, n_jobs=2, output_dir={str(tmp_path / "results")!r})
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode != 0
    assert "ConfigError" in done.stderr and "bootstrapping" not in done.stderr, done.stderr[-3000:]
    assert "line 5 starts this run at the top level" in done.stderr
