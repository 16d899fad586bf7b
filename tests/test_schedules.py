"""Cyclical LR and 1cycle schedules against closed forms written here in numpy."""

import inspect
import math
import warnings

import keras
import numpy as np
import pytest

from kfold_clr.schedules import (
    CyclePlanWarning,
    CyclicalLearningRate,
    OneCycle,
    check_cycle_plan,
    resolve_scale_fn,
    step_size_from_epochs,
)

STEPS = np.arange(12_000)


def inverse_sqrt(x):
    """A custom scale: 1 / sqrt(cycle); importable as test_schedules:inverse_sqrt."""
    return 1.0 / keras.ops.sqrt(x)


def slow_exp(x):
    """A custom scale per iteration."""
    return keras.ops.exp(-x / 5000.0)


NOT_CALLABLE = 3.0


# ---- reference implementations (numpy, float64) --------------------------------


def smith_symmetric(t, base, high, s, scale):
    """Smith's formula for a symmetric cycle; `scale(cycle, t)` is the amplitude."""
    t = np.asarray(t, dtype="float64")
    cycle = np.floor(1 + t / (2 * s))
    x = np.abs(t / s - 2 * cycle + 1)
    return base + (high - base) * np.maximum(0.0, 1 - x) * scale(cycle, t)


def asymmetric(t, base, high, up, down, scale):
    t = np.asarray(t, dtype="float64")
    length = up + down
    cycle = np.floor(1 + t / length)
    p = t - (cycle - 1) * length
    rise = np.where(p <= up, p / up, 1 - (p - up) / down)
    return base + (high - base) * rise * scale(cycle, t)


SCALES = {
    "triangular": lambda c, t: np.ones_like(t),
    "triangular2": lambda c, t: 1 / 2 ** (c - 1),
    "exp_range": lambda c, t, g=0.9997: g**t,
}


def values(schedule, steps=STEPS):
    return keras.ops.convert_to_numpy(schedule(steps)).astype("float64")


# ---- CyclicalLearningRate: closed forms ------------------------------------------


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_symmetric_modes_match_smith(mode):
    schedule = CyclicalLearningRate(1e-3, 6e-3, step_size=700, mode=mode, gamma=0.9997)
    expected = smith_symmetric(STEPS, 1e-3, 6e-3, 700, SCALES[mode])
    np.testing.assert_allclose(values(schedule), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_asymmetric_cycles_with_offset(mode):
    schedule = CyclicalLearningRate(
        0.01, 0.1, step_size=300, step_size_down=1100, mode=mode, gamma=0.9997,
        initial_step=2345,
    )
    t = STEPS + 2345
    expected = asymmetric(t, 0.01, 0.1, 300, 1100, SCALES[mode])
    np.testing.assert_allclose(values(schedule), expected, rtol=1e-6, atol=1e-12)


def test_asymmetric_equal_halves_is_symmetric():
    a = CyclicalLearningRate(0.1, 1.0, step_size=37, step_size_down=37, mode="triangular2")
    b = CyclicalLearningRate(0.1, 1.0, step_size=37, mode="triangular2")
    np.testing.assert_array_equal(values(a), values(b))


def test_scalar_step_and_variable_step_agree_with_vector():
    schedule = CyclicalLearningRate(0.1, 1.0, step_size=5, step_size_down=3)
    vector = values(schedule, np.arange(30))
    variable = keras.Variable(0, dtype="int64")
    for step in range(30):
        variable.assign(step)
        assert float(schedule(step)) == pytest.approx(vector[step], rel=1e-7)
        assert float(schedule(variable)) == pytest.approx(vector[step], rel=1e-7)


@pytest.mark.parametrize("offset", [0, 1, 999])
def test_custom_scale_fn_per_cycle(offset):
    schedule = CyclicalLearningRate(
        1e-4, 1e-2, step_size=250, step_size_down=400, scale_fn=inverse_sqrt,
        scale_mode="cycle", initial_step=offset,
    )
    expected = asymmetric(STEPS + offset, 1e-4, 1e-2, 250, 400, lambda c, t: 1 / np.sqrt(c))
    np.testing.assert_allclose(values(schedule), expected, rtol=1e-5, atol=1e-12)


def test_custom_scale_fn_per_iteration_from_import_path():
    schedule = CyclicalLearningRate(
        1e-4, 1e-2, step_size=600, scale_fn="test_schedules:slow_exp",
        scale_mode="iterations", initial_step=17,
    )
    expected = smith_symmetric(STEPS + 17, 1e-4, 1e-2, 600, lambda c, t: np.exp(-t / 5000))
    np.testing.assert_allclose(values(schedule), expected, rtol=2e-5, atol=1e-12)


def test_bounds_are_reached():
    schedule = CyclicalLearningRate(0.002, 0.02, step_size=10, step_size_down=30)
    lr = values(schedule, np.arange(120))
    assert lr.min() == pytest.approx(0.002, rel=1e-6)
    assert lr.max() == pytest.approx(0.02, rel=1e-6)
    np.testing.assert_allclose(lr[[10, 50, 90]], 0.02, rtol=1e-6)
    np.testing.assert_allclose(lr[[0, 40, 80]], 0.002, rtol=1e-6)


# ---- cycle ends ---------------------------------------------------------------


@pytest.mark.parametrize(
    "step_size, step_size_down, offset",
    [(5, None, 0), (4, 9, 0), (4, 9, 7), (6, None, 25), (3, 1, 4)],
)
def test_cycle_end_updates_are_the_low_points(step_size, step_size_down, offset):
    schedule = CyclicalLearningRate(
        0.5, 2.0, step_size, step_size_down, initial_step=offset
    )
    down = step_size if step_size_down is None else step_size_down
    assert schedule.cycle_length == step_size + down
    n = 200
    ends = schedule.cycle_end_updates(n)
    assert ends == [k for k in range(1, n + 1) if (offset + k) % (step_size + down) == 0]
    lr = values(schedule, np.arange(n + 1))
    # After update k the optimizer's step is k: that LR is the cycle's low point.
    np.testing.assert_allclose(lr[ends], 0.5, rtol=1e-7)
    others = np.setdiff1d(np.arange(1, n + 1), ends)
    assert np.all(lr[others] > 0.5)


def test_cycle_end_updates_edge_cases():
    schedule = CyclicalLearningRate(0.1, 1.0, step_size=5)
    assert schedule.cycle_end_updates(0) == []
    assert schedule.cycle_end_updates(9) == []
    assert schedule.cycle_end_updates(10) == [10]
    with pytest.raises(ValueError, match=r"`n_updates` must be >= 0. Received: n_updates=-1"):
        schedule.cycle_end_updates(-1)


# ---- OneCycle -----------------------------------------------------------------


def one_cycle_reference(t, max_lr, total, pct, div, final_div, anneal):
    t = np.asarray(t, dtype="float64")
    last = total - 1
    w = pct * last
    lr0, lr_min = max_lr / div, max_lr / div / final_div

    def shape(a, b, f):
        if anneal == "linear":
            return a + (b - a) * f
        return b + (a - b) * (1 + np.cos(np.pi * f)) / 2

    up = shape(lr0, max_lr, t / w)
    down = shape(max_lr, lr_min, np.clip((t - w) / (last - w), 0, 1))
    return np.where(t <= w, up, down)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("offset", [0, 3000])
def test_one_cycle_matches_closed_form(anneal, offset):
    schedule = OneCycle(
        0.4, total_steps=10_001, pct_start=0.25, div_factor=20.0,
        final_div_factor=1e3, anneal=anneal, initial_step=offset,
    )
    expected = one_cycle_reference(STEPS + offset, 0.4, 10_001, 0.25, 20.0, 1e3, anneal)
    np.testing.assert_allclose(values(schedule), expected, rtol=2e-6, atol=1e-12)
    start = values(schedule, np.array([0]))[0]
    if offset == 0:
        assert start == pytest.approx(0.02, rel=1e-6)
        assert values(schedule, np.array([2500]))[0] == pytest.approx(0.4, rel=1e-6)
    assert values(schedule, np.array([10_000 - offset, 20_000]))[1] == pytest.approx(2e-5)


# ---- config round trips -------------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        CyclicalLearningRate(1e-3, 1e-2, 20),
        CyclicalLearningRate(1e-3, 1e-2, 20, 50, "exp_range", 0.999, initial_step=7, name="clr"),
        CyclicalLearningRate(1e-3, 1e-2, 20, scale_fn=inverse_sqrt, scale_mode="cycle"),
        CyclicalLearningRate(1e-3, 1e-2, 20, scale_fn="test_schedules:slow_exp",
                             scale_mode="iterations"),
        OneCycle(0.1, 500, pct_start=0.4, div_factor=10.0, final_div_factor=100.0,
                 anneal="linear", initial_step=3, name="oc"),
    ],
    ids=["clr", "clr-full", "clr-fn", "clr-path", "one-cycle"],
)
def test_config_round_trip(schedule):
    config = schedule.get_config()
    rebuilt = type(schedule).from_config(config)
    assert rebuilt.get_config() == config
    np.testing.assert_array_equal(values(rebuilt, STEPS[:3000]), values(schedule, STEPS[:3000]))
    # get_config returns exactly the constructor's arguments.
    params = set(inspect.signature(type(schedule).__init__).parameters) - {"self"}
    assert set(config) == params
    # Generic Keras (de)serialization finds the registered class.
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert type(again) is type(schedule)


def test_custom_scale_fn_serializes_by_import_path():
    config = CyclicalLearningRate(0.1, 1.0, 5, scale_fn=inverse_sqrt).get_config()
    assert config["scale_fn"] == f"{inverse_sqrt.__module__}:inverse_sqrt"


def test_lambda_or_local_scale_fn_cannot_be_serialized():
    def local(x):
        return x * 0 + 1

    for fn in (lambda x: x * 0 + 1, local):
        schedule = CyclicalLearningRate(0.1, 1.0, 5, scale_fn=fn)
        assert float(schedule(3)) == pytest.approx(0.1 + 0.9 * 3 / 5)  # works in Python
        with pytest.raises(ValueError, match=r"`scale_fn` cannot be serialized.*import path"):
            schedule.get_config()


# ---- resolve_scale_fn -------------------------------------------------------


def test_resolve_scale_fn():
    assert resolve_scale_fn("math:sqrt") is math.sqrt
    assert resolve_scale_fn("os.path:join") is __import__("os").path.join
    assert resolve_scale_fn(inverse_sqrt) is inverse_sqrt


@pytest.mark.parametrize(
    "spec, message",
    [
        ("math.sqrt", r"form 'package.module:function'. Received: scale_fn='math.sqrt'"),
        ("no_such_module_xyz:f", r"importing 'no_such_module_xyz' failed"),
        ("math:no_such_function", r"'no_such_function' was not found"),
        ("test_schedules:NOT_CALLABLE", r"must name a callable"),
        (":f", r"form 'package.module:function'"),
        (3, r"Received: scale_fn=3"),
    ],
)
def test_resolve_scale_fn_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_scale_fn(spec)
    with pytest.raises(ValueError, match=r"Argument `scale_fn`"):
        CyclicalLearningRate(0.1, 1.0, 5, scale_fn=spec)


# ---- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base_lr": 0.0}, r"`base_lr` must be > 0. Received: base_lr=0.0"),
        ({"base_lr": -1e-3}, r"`base_lr` must be > 0. Received: base_lr=-0.001"),
        ({"max_lr": 0}, r"`max_lr` must be > 0. Received: max_lr=0"),
        ({"base_lr": 0.1, "max_lr": 0.1}, r"`max_lr` must be > `base_lr`. Received: base_lr=0.1, max_lr=0.1"),
        ({"base_lr": 0.2, "max_lr": 0.1}, r"`max_lr` must be > `base_lr`. Received: base_lr=0.2"),
        ({"base_lr": float("nan")}, r"`base_lr` must be a finite number. Received: base_lr=nan"),
        ({"base_lr": "0.1"}, r"`base_lr` must be a finite number. Received: base_lr='0.1'"),
        ({"step_size": 0}, r"`step_size` must be >= 1. Received: step_size=0"),
        ({"step_size": 2.5}, r"`step_size` must be an integer >= 1. Received: step_size=2.5"),
        ({"step_size_down": 0}, r"`step_size_down` must be >= 1. Received: step_size_down=0"),
        ({"mode": "cosine"},
         r"`mode` must be one of 'triangular', 'triangular2', 'exp_range'. Received: mode='cosine'"),
        ({"mode": "exp_range", "gamma": 0.0}, r"`gamma` must be in \(0, 1\]. Received: gamma=0.0"),
        ({"mode": "exp_range", "gamma": 1.5}, r"`gamma` must be in \(0, 1\]. Received: gamma=1.5"),
        ({"scale_mode": "epoch"}, r"`scale_mode` must be one of 'cycle', 'iterations'. Received: scale_mode='epoch'"),
        ({"initial_step": -1}, r"`initial_step` must be >= 0. Received: initial_step=-1"),
        ({"scale_fn": "nope_pkg.mod:fn"}, r"`scale_fn` must name an importable module"),
        ({"scale_fn": inverse_sqrt, "mode": "exp_range"}, r"`mode` and `scale_fn` are exclusive"),
    ],
)
def test_cyclical_validation(kwargs, message):
    arguments = {"base_lr": 1e-3, "max_lr": 1e-2, "step_size": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        CyclicalLearningRate(**arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_lr": 0.0}, r"`max_lr` must be > 0. Received: max_lr=0.0"),
        ({"total_steps": 1}, r"`total_steps` must be >= 2. Received: total_steps=1"),
        ({"pct_start": 0.0}, r"`pct_start` must be in \(0, 1\). Received: pct_start=0.0"),
        ({"pct_start": 1.0}, r"`pct_start` must be in \(0, 1\). Received: pct_start=1.0"),
        ({"div_factor": 0.5}, r"`div_factor` must be >= 1. Received: div_factor=0.5"),
        ({"final_div_factor": 0}, r"`final_div_factor` must be >= 1. Received: final_div_factor=0"),
        ({"anneal": "exp"}, r"`anneal` must be one of 'cos', 'linear'. Received: anneal='exp'"),
        ({"initial_step": -3}, r"`initial_step` must be >= 0. Received: initial_step=-3"),
    ],
)
def test_one_cycle_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneCycle(**{"max_lr": 0.1, "total_steps": 100, **kwargs})


# ---- planning helpers -----------------------------------------------------


def test_step_size_from_epochs():
    assert step_size_from_epochs(3, n_samples=1000, batch_size=32) == 3 * 32  # ceil(31.25)
    assert step_size_from_epochs(2, n_samples=1024, batch_size=32) == 64
    assert step_size_from_epochs(0.5, n_samples=100, batch_size=10) == 5
    assert step_size_from_epochs(0.01, n_samples=10, batch_size=10) == 1
    assert step_size_from_epochs(1, n_samples=5, batch_size=64) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 100, 10), r"`epochs` must be > 0. Received: epochs=0"),
        ((-2, 100, 10), r"`epochs` must be > 0. Received: epochs=-2"),
        ((2, 0, 32), r"`n_samples` must be >= 1. Received: n_samples=0"),
        ((2, 100, 0), r"`batch_size` must be >= 1. Received: batch_size=0"),
        ((2, 100.5, 10), r"`n_samples` must be an integer >= 1. Received: n_samples=100.5"),
    ],
)
def test_step_size_from_epochs_validation(args, message):
    epochs, n_samples, batch_size = args
    with pytest.raises(ValueError, match=message):
        step_size_from_epochs(epochs, n_samples=n_samples, batch_size=batch_size)


def test_check_cycle_plan_sound_plan_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_cycle_plan(step_size=10, total_iterations=60) == []
        assert check_cycle_plan(step_size=10, step_size_down=30, total_iterations=80) == []


def test_check_cycle_plan_mid_cycle():
    with pytest.warns(CyclePlanWarning, match=r"total_iterations=70 stops mid-cycle") as record:
        messages = check_cycle_plan(step_size=10, total_iterations=70)
    assert len(messages) == 1 and len(record) == 1
    assert "total_iterations=60 or 80" in messages[0]
    assert issubclass(CyclePlanWarning, UserWarning)


def test_check_cycle_plan_step_size_too_long():
    with pytest.warns(CyclePlanWarning) as record:
        messages = check_cycle_plan(step_size=100, step_size_down=50, total_iterations=80)
    assert len(messages) == 2 and len(record) == 2
    assert "never reaches max_lr" in messages[0]
    assert "step_size=100 >= total_iterations=80" in messages[0]
    assert "mid-cycle" in messages[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"step_size": 0, "total_iterations": 10}, r"`step_size` must be >= 1. Received: step_size=0"),
        ({"step_size": 2, "step_size_down": 0, "total_iterations": 10}, r"`step_size_down` must be >= 1"),
        ({"step_size": 2, "total_iterations": 0}, r"`total_iterations` must be >= 1. Received: total_iterations=0"),
    ],
)
def test_check_cycle_plan_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_cycle_plan(**kwargs)
