"""Cost of a cyclical LR in `fit`: in-graph schedule vs constant LR vs per-batch callback.

Trains the same small MLP (64 hidden units) on scikit-learn's digits three ways, with
the same data, batch order and number of steps: a constant LR, `CyclicalLearningRate`
(evaluated inside the training graph), and the classic Keras CLR callback that assigns
the LR from Python before every batch (bckenstler style). Each variant is warmed up
(graph tracing) and then timed `--repeats` times, interleaved; the medians (and the
minima, less sensitive to a busy machine) are printed with their ratio to the constant
LR. Target: the in-graph CLR costs at most 3% more than the constant LR.

Run: python benchmarks/bench_schedules.py [--repeats 7] [--epochs 10]
"""

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from kfold_clr.schedules import CyclicalLearningRate  # noqa: E402

BASE_LR, MAX_LR, STEP_SIZE = 0.01, 0.1, 120


class PythonCLR(keras.callbacks.Callback):
    """bckenstler's CLR callback: triangular LR assigned in Python before each batch."""

    def __init__(self, base_lr, max_lr, step_size):
        super().__init__()
        self.base_lr, self.max_lr, self.step_size = base_lr, max_lr, step_size
        self.clr_iterations = 0

    def clr(self):
        cycle = math.floor(1 + self.clr_iterations / (2 * self.step_size))
        x = abs(self.clr_iterations / self.step_size - 2 * cycle + 1)
        return self.base_lr + (self.max_lr - self.base_lr) * max(0.0, 1 - x)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.clr())
        self.clr_iterations += 1


def build(learning_rate, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    return model


VARIANTS = {
    "constant LR": lambda: (build(BASE_LR, 0), []),
    "CyclicalLearningRate": lambda: (
        build(CyclicalLearningRate(BASE_LR, MAX_LR, step_size=STEP_SIZE), 0),
        [],
    ),
    "Python callback CLR": lambda: (build(BASE_LR, 0), [PythonCLR(BASE_LR, MAX_LR, STEP_SIZE)]),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    x, y = load_digits(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype("float32")
    steps = args.epochs * math.ceil(len(x) / args.batch_size)

    prepared = {}
    for name, make in VARIANTS.items():  # warm-up: build and trace every variant once
        model, callbacks = make()
        model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0,
                  callbacks=callbacks)
        prepared[name] = (model, callbacks)

    times = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        for name, (model, callbacks) in prepared.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=False,
                      verbose=0, callbacks=callbacks)
            times[name].append(time.perf_counter() - start)

    reference = statistics.median(times["constant LR"])
    reference_min = min(times["constant LR"])
    print(f"MLP 64 hidden, digits {x.shape}, batch {args.batch_size}, {steps} steps per fit, "
          f"{args.repeats} timed fits per variant")
    print(f"{'variant':<24}{'median s':>10}{'us/step':>10}{'median ratio':>14}"
          f"{'min s':>9}{'min ratio':>11}")
    for name, values in times.items():
        median, fastest = statistics.median(values), min(values)
        print(f"{name:<24}{median:>10.3f}{1e6 * median / steps:>10.1f}"
              f"{median / reference:>13.3f}x{fastest:>9.3f}{fastest / reference_min:>10.3f}x")
    print("ratio = time / time of the constant LR; the min is the least noisy on a busy machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
