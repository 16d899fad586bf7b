"""kfold_clr: k-fold cross-validation for Keras models trained with cyclical learning rates.

The heavy parts (TensorFlow, Keras) are imported on first use, so that
``kfold-clr --version`` and ``--help`` answer at once; the imports under
``TYPE_CHECKING`` let editors and type checkers see every public name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_LAZY = {
    # schedules and callbacks, for your own `fit`
    "CyclicalLearningRate": "kfold_clr.schedules",
    # schedule kinds of your own, for `strategies:` entries
    "register_schedule": "kfold_clr.training.fold_plans",
    "BaseStrategy": "kfold_clr.config.strategies",
    "OneCycle": "kfold_clr.schedules",
    "CyclicalMomentum": "kfold_clr.schedules",
    "LearningRateRecorder": "kfold_clr.schedules",
    "SnapshotCollector": "kfold_clr.training.trainer",
    "step_size_from_epochs": "kfold_clr.schedules",
    "check_cycle_plan": "kfold_clr.schedules",
    # range test
    "lr_range_test": "kfold_clr.range_test",
    "RangeTestResult": "kfold_clr.range_test",
    # experiments
    "cross_validate": "kfold_clr.api",
    "run_experiment": "kfold_clr.execution.experiment",
    "load_results": "kfold_clr.results",
    "Results": "kfold_clr.results",
    "load_config": "kfold_clr.config",
    "build_report": "kfold_clr.report",
    # errors
    "KfoldClrError": "kfold_clr.errors",
    "ConfigError": "kfold_clr.errors",
    "DataError": "kfold_clr.errors",
    "ResultsError": "kfold_clr.errors",
}

if TYPE_CHECKING:  # what editors see (re-exports, hence noqa); at run time `__getattr__` imports on first use
    from kfold_clr.api import cross_validate  # noqa: F401
    from kfold_clr.config import load_config  # noqa: F401
    from kfold_clr.config.strategies import BaseStrategy  # noqa: F401
    from kfold_clr.errors import ConfigError, DataError, KfoldClrError, ResultsError  # noqa: F401
    from kfold_clr.execution.experiment import run_experiment  # noqa: F401
    from kfold_clr.range_test import RangeTestResult, lr_range_test  # noqa: F401
    from kfold_clr.report import build_report  # noqa: F401
    from kfold_clr.results import Results, load_results  # noqa: F401
    from kfold_clr.schedules import (  # noqa: F401
        CyclicalLearningRate,
        CyclicalMomentum,
        LearningRateRecorder,
        OneCycle,
        check_cycle_plan,
        step_size_from_epochs,
    )
    from kfold_clr.training.fold_plans import register_schedule  # noqa: F401
    from kfold_clr.training.trainer import SnapshotCollector  # noqa: F401

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kfold_clr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
