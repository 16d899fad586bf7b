"""Learning-rate schedules: cyclical LR, 1cycle, cyclical momentum and helpers.

The schedules are `keras.optimizers.schedules.LearningRateSchedule`s evaluated in
the training graph and registered for `.keras` saving under the package
`kfold_clr`; the callbacks record the applied LR and cycle the momentum.
"""

from kfold_clr.schedules._common import resolve_scale_fn
from kfold_clr.schedules.callbacks import CyclicalMomentum, LearningRateRecorder
from kfold_clr.schedules.cyclical import CyclicalLearningRate
from kfold_clr.schedules.one_cycle import OneCycle
from kfold_clr.schedules.planning import (
    CyclePlanWarning,
    check_cycle_plan,
    step_size_from_epochs,
)

__all__ = [
    "CyclePlanWarning",
    "CyclicalLearningRate",
    "CyclicalMomentum",
    "LearningRateRecorder",
    "OneCycle",
    "check_cycle_plan",
    "resolve_scale_fn",
    "step_size_from_epochs",
]
