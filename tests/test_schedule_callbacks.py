"""The schedules inside `fit`: applied LRs, several fits, steps_per_execution, momentum.

The probe model has one weight `w` (Dense(1) without bias on inputs of 1) and the
loss `mean(y_pred)`, so every gradient is exactly 1: plain SGD gives
`w_n = -sum(lr_1 .. lr_n)`, which shows the LR the optimizer really applied.
"""

import keras
import numpy as np
import pytest

from kfold_clr.schedules import (
    CyclicalLearningRate,
    CyclicalMomentum,
    LearningRateRecorder,
    OneCycle,
)

BATCH = 4


def mean_prediction(y_true, y_pred):
    return keras.ops.mean(y_pred)


def probe_model(optimizer, steps_per_execution=1):
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(optimizer=optimizer, loss=mean_prediction, steps_per_execution=steps_per_execution)
    return model


def fit(model, n_updates, callbacks, epochs=1):
    x = np.ones((n_updates * BATCH, 1), dtype="float32")
    model.fit(x, x, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


def weight(model):
    return float(model.layers[0].kernel.numpy()[0, 0])


def clr_closed_form(t, base, high, s, d):
    """LR at optimizer step(s) t: written independently of the package."""
    t = np.asarray(t, dtype="float64")
    length = s + d
    cycle = np.floor(1 + t / length)
    p = t - (cycle - 1) * length
    rise = np.where(p <= s, p / s, 1 - (p - s) / d)
    return base + (high - base) * rise


def test_lr_follows_schedule_across_two_fits_and_steps_per_execution():
    schedule = CyclicalLearningRate(0.01, 0.1, step_size=4, step_size_down=7, initial_step=3)
    model = probe_model(keras.optimizers.SGD(schedule), steps_per_execution=3)
    recorder = LearningRateRecorder()
    fit(model, 14, [recorder], epochs=2)  # 28 updates, 10 executions (last one partial)
    fit(model, 9, [recorder])  # continues at step 28
    n = 37
    assert int(model.optimizer.iterations) == n
    expected = clr_closed_form(np.arange(n) + 3, 0.01, 0.1, 4, 7)  # update k uses step k - 1
    assert recorder.history["iterations"] == list(range(1, n + 1))
    np.testing.assert_allclose(recorder.history["lr"], expected, rtol=1e-6)
    assert weight(model) == pytest.approx(-expected.sum(), rel=1e-5)


def test_recorder_reset_on_train_begin():
    schedule = CyclicalLearningRate(0.01, 0.1, step_size=5)
    model = probe_model(keras.optimizers.SGD(schedule))
    recorder = LearningRateRecorder(reset_on_train_begin=True)
    fit(model, 6, [recorder])
    fit(model, 4, [recorder])
    assert recorder.history["iterations"] == [7, 8, 9, 10]
    np.testing.assert_allclose(
        recorder.history["lr"], clr_closed_form(np.arange(6, 10), 0.01, 0.1, 5, 5), rtol=1e-6
    )


def test_one_cycle_applied_in_fit():
    schedule = OneCycle(0.5, total_steps=20, pct_start=0.25, div_factor=10.0, anneal="linear")
    model = probe_model(keras.optimizers.SGD(schedule))
    recorder = LearningRateRecorder()
    fit(model, 20, [recorder])
    t = np.arange(20.0)
    w = 0.25 * 19
    expected = np.where(
        t <= w, 0.05 + (0.5 - 0.05) * t / w, 0.5 + (0.05 / 1e4 - 0.5) * (t - w) / (19 - w)
    )
    np.testing.assert_allclose(recorder.history["lr"], expected, rtol=1e-5)
    assert weight(model) == pytest.approx(-expected.sum(), rel=1e-5)


@pytest.mark.parametrize(
    "learning_rate, reference",
    [
        (0.05, lambda t: np.full_like(t, 0.05)),
        (
            keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5),
            lambda t: 0.1 * 0.5 ** (t / 4),
        ),
        (
            keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10, warmup_target=0.2, warmup_steps=3),
            lambda t: np.where(
                t < 3, 0.1 + (0.2 - 0.1) * t / 3,
                0.2 * (1 + np.cos(np.pi * np.minimum(t - 3, 10) / 10)) / 2,
            ),
        ),
        (
            keras.optimizers.schedules.CosineDecayRestarts(0.1, first_decay_steps=5),
            lambda t: np.where(
                t < 5, 0.1 * (1 + np.cos(np.pi * t / 5)) / 2,
                0.1 * (1 + np.cos(np.pi * (t - 5) / 10)) / 2,
            ),
        ),
    ],
    ids=["float", "exponential", "cosine-warmup", "cosine-restarts"],
)
def test_recorder_with_plain_lr_and_keras_schedules(learning_rate, reference):
    model = probe_model(keras.optimizers.SGD(learning_rate), steps_per_execution=2)
    recorder = LearningRateRecorder()
    fit(model, 11, [recorder])
    expected = reference(np.arange(11.0))
    assert recorder.history["iterations"] == list(range(1, 12))
    np.testing.assert_allclose(recorder.history["lr"], expected, rtol=1e-5)
    assert weight(model) == pytest.approx(-expected.sum(), rel=1e-5)


class AssignLearningRate(keras.callbacks.Callback):
    """bckenstler style: a Python float LR changed before every batch."""

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations)
        self.model.optimizer.learning_rate.assign(0.01 * (step + 1))


def test_recorder_reads_a_variable_lr_set_by_a_callback():
    model = probe_model(keras.optimizers.SGD(0.5))
    recorder = LearningRateRecorder()
    fit(model, 6, [AssignLearningRate(), recorder])
    expected = 0.01 * np.arange(1, 7)
    np.testing.assert_allclose(recorder.history["lr"], expected, rtol=1e-6)
    assert weight(model) == pytest.approx(-expected.sum(), rel=1e-5)


# ---- CyclicalMomentum -----------------------------------------------------------


def test_cyclical_momentum_is_applied_inversely_in_the_graph():
    schedule = CyclicalLearningRate(0.01, 0.05, step_size=3, step_size_down=5)
    model = probe_model(keras.optimizers.SGD(schedule, momentum=0.9), steps_per_execution=2)
    callback = CyclicalMomentum(base_momentum=0.8, max_momentum=0.95)
    fit(model, 10, [callback])
    fit(model, 7, [callback])
    t = np.arange(17.0)
    lr = clr_closed_form(t, 0.01, 0.05, 3, 5)
    momentum = 0.95 - (0.95 - 0.8) * (lr - 0.01) / (0.05 - 0.01)
    applied = callback.momentum_at(t, schedule)
    np.testing.assert_allclose(applied, momentum, rtol=1e-12)
    # The callback's own values: max momentum at the LR's low point, base at its peak, and
    # exactly inverse to the package's schedule (not to the closed form above).
    assert applied[0] == pytest.approx(0.95) and applied[3] == pytest.approx(0.8)
    package_lr = keras.ops.convert_to_numpy(schedule(t)).astype("float64")
    assert np.corrcoef(package_lr, applied)[0, 1] == pytest.approx(-1.0, abs=1e-6)
    # Keras SGD: v = m * v - lr * g; w = w + v, with g = 1.
    w = v = 0.0
    for m_k, lr_k in zip(momentum, lr):
        v = m_k * v - lr_k
        w += v
    assert weight(model) == pytest.approx(w, rel=1e-5)
    # The optimizer's own float is back after fit (and so are saving and copies).
    assert type(model.optimizer.momentum) is float and model.optimizer.momentum == 0.9


def test_fit_after_cyclical_momentum_uses_the_constant_momentum_again():
    schedule = CyclicalLearningRate(0.01, 0.05, step_size=2)
    model = probe_model(keras.optimizers.SGD(schedule, momentum=0.5))
    fit(model, 4, [CyclicalMomentum(0.1, 0.9)])
    w_before = weight(model)
    slots = [v for v in model.optimizer.variables if "momentum" in v.path]
    velocity = float(slots[0].numpy()[0, 0])
    fit(model, 3, [])
    lr = clr_closed_form(np.arange(4, 7.0), 0.01, 0.05, 2, 2)
    w, v = w_before, velocity
    for lr_k in lr:
        v = 0.5 * v - lr_k
        w += v
    assert weight(model) == pytest.approx(w, rel=1e-5)


class ProbeBeta1(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        beta_1 = keras.ops.convert_to_numpy(keras.ops.cast(optimizer.beta_1, "float32"))
        self.seen.append((int(optimizer.iterations), float(beta_1)))


def test_cyclical_momentum_drives_adam_beta_1():
    schedule = OneCycle(0.01, total_steps=12, pct_start=0.5, anneal="cos")
    model = probe_model(keras.optimizers.Adam(schedule, beta_1=0.9))
    probe = ProbeBeta1()
    callback = CyclicalMomentum(0.85, 0.95)
    fit(model, 12, [callback, probe])
    steps = np.array([s for s, _ in probe.seen], dtype="float64")
    w = 0.5 * 11
    height = np.where(
        steps <= w, (1 - np.cos(np.pi * steps / w)) / 2, (1 + np.cos(np.pi * (steps - w) / (11 - w))) / 2
    )
    np.testing.assert_allclose([b for _, b in probe.seen], 0.95 - 0.1 * height, rtol=1e-6)
    assert model.optimizer.beta_1 == 0.9 and np.isfinite(weight(model))


def test_cyclical_momentum_validation():
    with pytest.raises(ValueError, match=r"`max_momentum` must be > `base_momentum`"):
        CyclicalMomentum(0.95, 0.85)
    with pytest.raises(ValueError, match=r"`base_momentum` must be in \[0, 1\). Received: base_momentum=-0.1"):
        CyclicalMomentum(-0.1, 0.9)
    with pytest.raises(ValueError, match=r"`max_momentum` must be in \[0, 1\]. Received: max_momentum=1.5"):
        CyclicalMomentum(0.8, 1.5)
    with pytest.raises(ValueError, match=r"`schedule` must be a CyclicalLearningRate or OneCycle"):
        CyclicalMomentum(0.8, 0.9, schedule=keras.optimizers.schedules.ExponentialDecay(0.1, 5, 0.5))
    model = probe_model(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.raises(ValueError, match=r"needs a CyclicalLearningRate or OneCycle schedule"):
        fit(model, 2, [CyclicalMomentum(0.8, 0.9)])
    model = probe_model(keras.optimizers.SGD(CyclicalLearningRate(0.01, 0.1, 2)))
    with pytest.raises(ValueError, match=r"momentum > 0"):
        fit(model, 2, [CyclicalMomentum(0.8, 0.9)])
