"""Cyclical momentum is computed inside the train step from the update count, so a fold with it runs
several updates per call into the compiled step, with the numbers of one update per call."""

import copy

import numpy as np

from helpers import TINY_EXPERIMENT


def test_cyclical_momentum_runs_several_updates_per_call_with_the_same_weights(monkeypatch):
    import keras

    from kfold_clr.planning.preflight import prepare
    from kfold_clr.training import fold_plans as strategies
    from kfold_clr.training import trainer
    from kfold_clr.training.fold_plans import fold_spec, plan_folds

    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["strategies"] = {"clr_momentum": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                                                 "cycle_momentum": {"base_momentum": 0.8, "max_momentum": 0.95}}}
    experiment["training"]["epochs"] = 3
    config, dataset, splits, _ = prepare(experiment)
    plan = plan_folds("clr_momentum", config.strategies["clr_momentum"], splits, seed=config.seed,
                      epochs=3, batch_size=16)[0]
    spec = fold_spec(config, plan)
    assert not spec.per_batch_callbacks and trainer.execution_steps(plan.steps_per_epoch) > 1

    compiled = []
    original = trainer.compile_model
    monkeypatch.setattr(trainer, "compile_model", lambda *a, **k: compiled.append(k["steps_per_execution"])
                        or original(*a, **k))
    several = trainer.train_fold(config, dataset, spec, keep_weights=True)
    monkeypatch.setattr(strategies.FoldSpec, "per_batch_callbacks", property(lambda self: True))
    keras.backend.clear_session()
    one = trainer.train_fold(config, dataset, spec, keep_weights=True)
    assert compiled == [trainer.execution_steps(plan.steps_per_epoch), 1]
    for a, b in zip(several["weights"], one["weights"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert several["row"]["val_loss"] == one["row"]["val_loss"]
