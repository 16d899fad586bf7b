import subprocess
import sys

import pytest

from kfold_clr import __version__
from kfold_clr.cli import main


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
