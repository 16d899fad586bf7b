"""kfold_clr: k-fold cross-validation for Keras models trained with cyclical learning rates.

The heavy parts (TensorFlow, Keras) are imported on first use, so that
``kfold-clr --version`` and ``--help`` answer at once.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    # schedules and callbacks
    "CyclicalLearningRate": "kfold_clr.schedules",
    "OneCycle": "kfold_clr.schedules",
    "CyclicalMomentum": "kfold_clr.schedules",
    "LearningRateRecorder": "kfold_clr.schedules",
    "step_size_from_epochs": "kfold_clr.schedules",
    "check_cycle_plan": "kfold_clr.schedules",
    # range test
    "lr_range_test": "kfold_clr.range_test",
    "RangeTestResult": "kfold_clr.range_test",
    # experiments
    "cross_validate": "kfold_clr.api",
    "run_experiment": "kfold_clr.experiment",
    "load_results": "kfold_clr.experiment",
    "Results": "kfold_clr.experiment",
    "load_config": "kfold_clr.config",
    "build_report": "kfold_clr.report",
    # errors
    "KfoldClrError": "kfold_clr.errors",
    "ConfigError": "kfold_clr.errors",
    "DataError": "kfold_clr.errors",
    "ResultsError": "kfold_clr.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kfold_clr' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
