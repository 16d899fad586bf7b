import subprocess
import sys

import pytest

from kfold_clr import __version__
from kfold_clr.cli.main import main


def test_version_flag_prints_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_the_verbs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("run", "range-test", "validate", "report"):
        assert verb in out


def test_module_entry_point_runs():
    completed = subprocess.run([sys.executable, "-m", "kfold_clr", "--version"],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0
    assert __version__ in completed.stdout


def test_console_entry_point_runs_exit_handlers_and_keeps_the_exit_code(tmp_path):
    """`entry_point` runs atexit handlers, flushes output and returns main's exit code (here the
    config fails before TensorFlow loads: a normal exit; tests/test_cli_options.py covers the fast one)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: 0\ndata: {source: sklearn, name: digitz}\n")
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('handler ran', flush=True))\n"
              "sys.argv = ['kfold-clr', 'validate', sys.argv[1]]\n"
              "print('before', end='')\n"
              "from kfold_clr.cli.main import entry_point\n"
              "entry_point()\n")
    completed = subprocess.run([sys.executable, "-c", script, str(bad)], capture_output=True, text=True,
                               check=False)
    assert completed.returncode == 2
    assert completed.stdout.startswith("before")
    assert "handler ran" in completed.stdout
    assert "data.name: 'digitz'" in completed.stderr


def test_a_bad_config_is_reported_before_tensorflow_loads(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: 0\ntraining: {epochs: -1}\n")
    script = ("import sys\n"
              "from kfold_clr.cli.main import main\n"
              "code = main(['run', sys.argv[1]])\n"
              "print(code, 'tensorflow' in sys.modules)\n")
    completed = subprocess.run([sys.executable, "-c", script, str(bad)], capture_output=True, text=True,
                               check=False)
    assert completed.stdout.split() == ["2", "False"]
    assert "kfold-clr: error:" in completed.stderr
