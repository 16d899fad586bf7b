"""`fused_folds: auto` times a long fused step once: more steps of a heavy CNN's stacked model on a
few cores add seconds to every run without changing the choice; short steps are timed as before,
`STEPS` in one call."""

import time
from types import SimpleNamespace

import numpy as np
import pytest

from kfold_clr.training.fused import measure


class _SleepingModel:
    """A stacked model whose every step sleeps `per_step` seconds (one trace: the first call)."""

    per_step = 0.0
    calls = []

    def __init__(self, *args):
        pass

    def train_steps(self, x, y, index, active, numbers):
        _SleepingModel.calls.append(len(index))
        time.sleep(self.per_step * len(index) + (0.3 if len(_SleepingModel.calls) == 1 else 0.0))
        return SimpleNamespace(numpy=lambda: 0.0)


@pytest.fixture
def sleeping(monkeypatch):
    from kfold_clr.training.fused import model

    monkeypatch.setattr(model, "StackedModel", _SleepingModel)
    _SleepingModel.calls = []
    template = SimpleNamespace(trainable_variables=[], non_trainable_variables=[])
    config = SimpleNamespace(training=SimpleNamespace(optimizer=None, loss="mse"))
    x, y = np.zeros((2, 3), "float32"), np.zeros(2, "float32")
    return lambda per_step: (setattr(_SleepingModel, "per_step", per_step),
                             measure._fused_step(lambda: template, config, x, y, branches=3, steps=4))[1]


def test_a_long_fused_step_is_timed_once(sleeping):
    step, trace = sleeping(measure.LONG_STEP * 1.5)
    assert _SleepingModel.calls == [1, 1]  # the trace, then one timed step
    assert step == pytest.approx(measure.LONG_STEP * 1.5, rel=0.3)
    assert trace == pytest.approx(0.3, abs=0.1)


def test_short_fused_steps_are_timed_in_one_call_of_steps(sleeping):
    step, trace = sleeping(0.01)
    assert _SleepingModel.calls == [1, 1, 4]  # the trace, one step, then 4 steps in one call
    assert step == pytest.approx(0.01, abs=0.005)
    assert trace == pytest.approx(0.3, abs=0.1)
