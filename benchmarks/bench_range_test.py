"""Wall time of the LR range test against plain `model.fit` for the same iterations.

Same small model (MLP 20-64-3, softmax) and data (4096 samples, batch 32, 4
epochs = 512 iterations). Each repetition builds and compiles a fresh model
with the same seed, then times either `model.fit` or `lr_range_test` (which
also restores the model afterwards). One warm-up of each, then the median of
`--repeats` runs. Target: the range test at most 10% above plain training.

Run: `python benchmarks/bench_range_test.py [--repeats 7] [--epochs 4]`
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kfold_clr.range_test import lr_range_test  # noqa: E402

N, D, K, BATCH = 4096, 20, 3, 32


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(D, K)) + 0.5 * rng.normal(size=(N, K)), axis=1)
    return x, y


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(K, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def time_fit(x, y, epochs):
    model = make_model()
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
    return time.perf_counter() - start


def time_fit_dataset(x, y, epochs):
    """Plain training fed like the range test feeds it (a tf.data pipeline), to isolate the recording cost."""
    import tensorflow as tf

    model = make_model()
    start = time.perf_counter()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(N, seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE)
    model.fit(dataset, epochs=epochs, shuffle=False, verbose=0)
    return time.perf_counter() - start


def time_range_test(x, y, epochs):
    model = make_model()
    start = time.perf_counter()
    result = lr_range_test(model, x, y, min_lr=1e-6, max_lr=1.0, epochs=epochs, batch_size=BATCH,
                           divergence_threshold=float("inf"))
    elapsed = time.perf_counter() - start
    assert len(result.history) == epochs * -(-N // BATCH), "the sweep stopped early"
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    x, y = make_data()
    iterations = args.epochs * -(-N // BATCH)
    time_fit(x, y, 1), time_range_test(x, y, 1)  # warm-up: TensorFlow start-up, first traces
    time_fit_dataset(x, y, 1)
    fit_times, dataset_times, test_times = [], [], []
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits all alike
        fit_times.append(time_fit(x, y, args.epochs))
        dataset_times.append(time_fit_dataset(x, y, args.epochs))
        test_times.append(time_range_test(x, y, args.epochs))
    fit, test = statistics.median(fit_times), statistics.median(test_times)
    fit_ds = statistics.median(dataset_times)
    print(f"{iterations} iterations, batch {BATCH}, median of {args.repeats} (fresh compiled model each run)")
    print(f"{'plain model.fit':>18}: {fit:7.3f} s  ({1e3 * fit / iterations:.3f} ms/iteration)")
    print(f"{'plain fit, tf.data':>18}: {fit_ds:7.3f} s  ({1e3 * fit_ds / iterations:.3f} ms/iteration)")
    print(f"{'lr_range_test':>18}: {test:7.3f} s  ({1e3 * test / iterations:.3f} ms/iteration)")
    print(f"{'ratio':>18}: {test / fit:7.3f} vs model.fit(x, y), {test / fit_ds:.3f} vs fit on tf.data "
          "(target <= 1.10)")


if __name__ == "__main__":
    main()
