"""The model pool keeps a few compiled models: folds alternating between two update counts per
call (epochs a batch apart) reuse theirs instead of rebuilding and retracing one per fold."""

from types import SimpleNamespace

import pytest

from kfold_clr.training import model_pool


@pytest.fixture
def counted_pool(monkeypatch):
    built = []
    monkeypatch.setattr(model_pool, "build_model", lambda *a, **k: built.append(object()) or built[-1])
    monkeypatch.setattr(model_pool, "compile_model", lambda *a, **k: None)
    monkeypatch.setattr(model_pool, "make_optimizer", lambda *a, **k: None)
    monkeypatch.setattr(model_pool, "LearningRateTable", lambda capacity: SimpleNamespace(capacity=capacity))
    config = SimpleNamespace(model=SimpleNamespace(model_dump_json=lambda: "{}"))
    dataset = SimpleNamespace(n_outputs=2, task="classification")

    def pooled(pool, steps_per_execution, iterations=10):
        spec = SimpleNamespace(optimizer=SimpleNamespace(model_dump_json=lambda: "{}"), loss="mse", metrics=(),
                               plan=SimpleNamespace(iterations=iterations))
        return pool.model(config, dataset, spec, (4,), steps_per_execution)[0]

    return pooled, built


def test_alternating_updates_per_call_reuse_their_models(counted_pool):
    pooled, built = counted_pool
    pool = model_pool.ModelPool()
    first, second = pooled(pool, 21), pooled(pool, 22)
    assert first is not second
    assert [pooled(pool, spe) for spe in (21, 22, 21, 21, 22)] == [first, second, first, first, second]
    assert len(built) == 2
    assert pool._model is second  # the most recently used


def test_the_pool_keeps_at_most_size_models_dropping_the_least_recently_used(counted_pool):
    pooled, built = counted_pool
    pool = model_pool.ModelPool(size=2)
    first, second = pooled(pool, 1), pooled(pool, 2)
    assert pooled(pool, 1) is first  # 1 used last: 2 is the least recently used
    pooled(pool, 3)  # a third key drops 2
    assert pooled(pool, 1) is first and len(built) == 3
    assert pooled(pool, 2) is not second and len(built) == 4
    pool.clear()
    assert pool._model is None


def test_a_longer_fold_than_the_table_holds_rebuilds(counted_pool):
    pooled, built = counted_pool
    pool = model_pool.ModelPool()
    first = pooled(pool, 1, iterations=10)
    assert pooled(pool, 1, iterations=12) is first  # the table holds 10 * 1.25 + 1 steps
    assert pooled(pool, 1, iterations=100) is not first
