"""Benchmark: cross-validating a CNN on a State-Farm-shaped image folder, kfold_clr against the
hand loop a practitioner writes, for N and 4N images, side by side in one run.

    python benchmarks/bench_images.py [--n 500] [--size 64] [--photo-size S] [--folds 3] [--epochs 2] [--factor 4]
                                      [--precision float32|mixed] [--repeats R]

For each folder size it generates a folder (`image_folder.py`: class folders, a driver table),
then runs, each as its own process timed from the outside (imports, decoding, training and
reports included):

- kfold_clr: `python -m kfold_clr run` on a generated config (labels from the class folders,
  groups from the driver table, `stratified_group` splits, a cold pixel cache of its own), twice:
  as configured by default (`training.train_scores: false`, as neither hand loop scores the final
  weights on the training rows), and with `train_scores: true` (one pass over them per fold);
- the hand loop: file lists from the table, scikit-learn's StratifiedGroupKFold on the drivers,
  a `tf.data` pipeline decoding the JPEGs (`tf.io.decode_jpeg` + resize) every epoch, a new
  model per fold, the same CNN (16-32-64), epochs, batch size and two strategies (a constant
  LR and a triangular cyclical LR), twice: evaluated once after training ("hand loop"), and
  with `validation_data` so that it validates after every epoch ("hand + val"), the work
  kfold_clr does for its per-epoch learning curves (`history.csv`).

Before the timed runs of each folder size, an untimed process imports the libraries and the
folder's files are read once, so that no timed run pays for cold disk reads the others do not.
Printed per folder size and tool: whole-run wall time, the process tree's peak anonymous
memory (`RssAnon` of the process and its children, polled from /proc; a memory-mapped cache's
pages are not anonymous and do not count), the largest single-process max RSS that
`/usr/bin/time -v` saw (if installed), decode throughput (kfold_clr: its own log line for the
first, cold-cache decoding; hand loop: one pass of its decode pipeline, timed apart), and
mean validation accuracy per strategy. `--repeats R` runs every tool R times, in turn (kfold_clr,
kfold_clr scored, hand loop, hand + val, then again), and prints the median wall time and the
largest peak memory: a shared machine's noise of several per cent then moves no ratio much.
`--precision mixed` trains both tools in Keras's mixed precision (bfloat16 on CPUs, float16
on GPUs: kfold_clr's `training.precision: mixed`; the hand loop sets the same global policy).
Nothing is written outside a temporary folder, which
is removed at the end (`--keep DIR` keeps everything in DIR, which must be new or empty).
"""

import argparse
import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from image_folder import TABLE, make_image_folder  # noqa: E402
from kfold_clr.storage.ownership import atomic_write_text  # noqa: E402

FILTERS, HIDDEN = [16, 32, 64], [64]
STRATEGIES = {"constant": {"schedule": "constant", "lr": 0.01},
              "clr": {"schedule": "clr", "policy": "triangular", "base_lr": 0.002, "max_lr": 0.05,
                      "step_size_epochs": 1}}
TOOLS = {"kfold_clr": "kfold_clr", "kfold_clr_scored": "kfold_clr, train_scores: true", "hand": "hand loop",
         "hand_val": "hand + val"}
KFOLD_CLR = ("kfold_clr", "kfold_clr_scored")
LABEL_WIDTH = max(map(len, TOOLS.values()))
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


# ----------------------------------------------------------------------------- measuring
def _tree(root_pid) -> list:
    """The pid and every descendant of `root_pid` alive now."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stream:
                    parent = int(stream.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss_anon_kib(pid) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measured(command, *, cwd, env=ENVIRONMENT, interval=0.1) -> dict:
    """Run `command`, polling its process tree's summed RssAnon; wall seconds, peak MiB, output."""
    timer = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    peak, done = [0], threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(timer + command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], sum(_rss_anon_kib(pid) for pid in _tree(process.pid)))
            done.wait(interval)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    poller.join()
    max_rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return {"seconds": seconds, "rss_anon_mib": peak[0] / 1024, "returncode": process.returncode,
            "max_rss_mib": int(max_rss.group(1)) / 1024 if max_rss else None, "stdout": stdout, "stderr": stderr}


# ----------------------------------------------------------------------------- kfold_clr
def kfold_clr_config(folder, *, args, work, train_scores=False) -> dict:
    return {"name": "bench-images", "seed": 0,
            "data": {"source": "images", "path": str(folder / "imgs" / "train"), "table": str(folder / TABLE),
                     "file_column": "img", "groups": "subject", "image_size": [args.size, args.size],
                     "scale": "none", "cache": str(work / "cache")},
            "model": {"kind": "cnn", "filters": FILTERS, "hidden": HIDDEN},
            "training": {"epochs": args.epochs, "batch_size": args.batch_size,
                         "optimizer": {"name": "sgd", "momentum": 0.9}, "metrics": ["accuracy"],
                         "train_scores": train_scores, "precision": args.precision},
            "cv": {"splitter": "stratified_group", "n_splits": args.folds, "shuffle": True},
            "strategies": STRATEGIES, "output": {"dir": str(work / "results")}}


def run_kfold_clr(folder, *, args, work, train_scores=False) -> dict:
    work.mkdir()
    config = work / "experiment.yaml"
    atomic_write_text(config, yaml.safe_dump(kfold_clr_config(folder, args=args, work=work, train_scores=train_scores),
                                             sort_keys=False))
    result = measured([sys.executable, "-m", "kfold_clr", "run", str(config), "--fresh", "-q"], cwd=work)
    if result["returncode"] != 0:
        raise RuntimeError(f"kfold_clr failed ({result['returncode']}):\n{result['stderr'][-3000:]}")
    decoded = re.search(r"decoded ([\d,]+) images in [\d.]+ s \(([\d,]+) images/s\)", result["stderr"])
    import pandas as pd

    folds = pd.read_csv(work / "results" / "folds.csv")
    return {**result, "decode_per_s": float(decoded.group(2).replace(",", "")) if decoded else None,
            "accuracy": folds.groupby("strategy")["val_accuracy"].mean().to_dict()}


# ----------------------------------------------------------------------------- the hand loop
def _decode_pipeline(paths, labels, size, batch_size, *, shuffle_seed=None):
    import tensorflow as tf

    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, [size, size]) / 255.0, label

    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle_seed is not None:
        data = data.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _files(folder):
    import pandas as pd

    table = pd.read_csv(folder / TABLE)
    paths = [str(folder / "imgs" / "train" / label / name) for label, name in zip(table.classname, table.img)]
    classes = sorted(table.classname.unique())
    return paths, table.classname.map(classes.index).to_numpy(), table.subject.to_numpy(), len(classes)


def _cnn(size, n_classes):
    """The CNN both tools train; its output layer computes in float32 under mixed precision, as
    Keras's mixed-precision guide (and kfold_clr's model builder) does."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in FILTERS:
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    for units in HIDDEN:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax", dtype="float32")(x))


def _learning_rate(strategy, steps_per_epoch):
    import keras

    if strategy["schedule"] == "constant":
        return strategy["lr"]

    class Triangular(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, base, peak, step_size):
            self.base, self.peak, self.step_size = base, peak, float(step_size)

        def __call__(self, step):
            cycle = keras.ops.floor(1 + keras.ops.cast(step, "float32") / (2 * self.step_size))
            x = keras.ops.abs(keras.ops.cast(step, "float32") / self.step_size - 2 * cycle + 1)
            return self.base + (self.peak - self.base) * keras.ops.maximum(0.0, 1.0 - x)

    return Triangular(strategy["base_lr"], strategy["max_lr"], strategy["step_size_epochs"] * steps_per_epoch)


def hand_loop(folder, *, size, folds, epochs, batch_size, validate=False, precision="float32") -> dict:
    """The practitioner's loop: file lists, StratifiedGroupKFold on drivers, tf.data, a new model per
    fold; `validate`: the validation rows evaluated after every epoch too (`validation_data`);
    `precision` "mixed": Keras's global mixed-precision policy (float16 on a GPU, else bfloat16)."""
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.model_selection import StratifiedGroupKFold

    if precision == "mixed":
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")

    paths, labels, drivers, n_classes = _files(folder)
    paths = np.asarray(paths)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    scores = {name: [] for name in STRATEGIES}
    for fold, (train, val) in enumerate(splitter.split(paths, labels, drivers)):
        for name, strategy in STRATEGIES.items():
            keras.utils.set_random_seed(fold)  # the same initial weights for both strategies
            model = _cnn(size, n_classes)
            steps = -(-len(train) // batch_size)
            model.compile(optimizer=keras.optimizers.SGD(_learning_rate(strategy, steps), momentum=0.9),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            validation = _decode_pipeline(paths[val], labels[val], size, batch_size)
            model.fit(_decode_pipeline(paths[train], labels[train], size, batch_size, shuffle_seed=fold),
                      epochs=epochs, verbose=0, validation_data=validation if validate else None)
            scores[name].append(model.evaluate(validation, verbose=0, return_dict=True)["accuracy"])
            keras.backend.clear_session()
    return {name: float(np.mean(values)) for name, values in scores.items()}


def warm_up(folder):
    """Read the libraries every tool loads and the folder's files once, untimed, so that the first
    timed run does not also pay for reading them from disk."""
    subprocess.run([sys.executable, "-c", "import keras, matplotlib.pyplot, pandas, sklearn, tensorflow"],
                   env=ENVIRONMENT, capture_output=True, check=True)
    for path in sorted(pathlib.Path(folder).rglob("*")):
        if path.is_file() and not path.is_symlink():
            path.read_bytes()


def decode_throughput(folder, *, size, batch_size) -> float:
    """Images per second of one pass of the hand loop's decode pipeline over the whole folder."""
    paths, labels, _, _ = _files(folder)
    pipeline = _decode_pipeline(paths, labels, size, batch_size)  # TensorFlow imported, the graph built
    started = time.perf_counter()
    for _ in pipeline:
        pass
    return len(paths) / (time.perf_counter() - started)


def run_hand_loop(folder, *, args, work, validate=False) -> dict:
    common = ["--folder", str(folder), "--size", str(args.size), "--batch-size", str(args.batch_size)]
    result = measured([sys.executable, __file__, "--hand-loop", *common, "--folds", str(args.folds),
                       "--epochs", str(args.epochs), "--precision", args.precision,
                       *(["--validate"] if validate else [])], cwd=work)
    if result["returncode"] != 0:
        raise RuntimeError(f"the hand loop failed ({result['returncode']}):\n{result['stderr'][-3000:]}")
    decode = subprocess.run([sys.executable, __file__, "--decode-only", *common], cwd=work, env=ENVIRONMENT,
                            capture_output=True, text=True, check=True)
    return {**result, "accuracy": json.loads(result["stdout"].strip().splitlines()[-1]),
            "decode_per_s": float(decode.stdout.strip().splitlines()[-1])}


# ----------------------------------------------------------------------------- report
def _row(label, n, result):
    accuracy = ", ".join(f"{name} {value:.3f}" for name, value in sorted(result["accuracy"].items()))
    max_rss = f"{result['max_rss_mib']:,.0f}" if result["max_rss_mib"] is not None else "n/a"
    decode = f"{result['decode_per_s']:,.0f}" if result["decode_per_s"] else "n/a"
    return (f"{n:>7,}  {label:<{LABEL_WIDTH}} {result['seconds']:>8.1f} {result['rss_anon_mib']:>12,.0f} {max_rss:>11} "
            f"{decode:>10}   {accuracy}")


def report(results, args) -> str:
    photos = args.photo_size or args.size
    lines = [f"{photos} x {photos} JPEGs read at {args.size} x {args.size}, {args.classes} classes, "
             f"{args.drivers} drivers; CNN {FILTERS} + "
             f"{HIDDEN}; {args.folds} folds x {len(STRATEGIES)} strategies x {args.epochs} epochs, batch "
             f"{args.batch_size}; precision {args.precision}; {os.cpu_count()} CPUs"
             + (f"; wall time: the median of {args.repeats} runs each" if args.repeats > 1 else ""),
             f"{'images':>7}  {'tool':<{LABEL_WIDTH}} {'wall s':>8} {'RssAnon MiB':>12} {'maxRSS MiB':>11} "
             f"{'decode/s':>10}   mean val accuracy"]
    for n, runs in results.items():
        lines += [_row(TOOLS[tool], n, result) for tool, result in runs.items()]
        lines += [f"{'':>7}  time ratio {TOOLS[ours]} / {TOOLS[tool]}: "
                  f"{runs[ours]['seconds'] / result['seconds']:.2f}"
                  for ours in KFOLD_CLR for tool, result in runs.items() if tool not in KFOLD_CLR]
    small, large = (results[n] for n in sorted(results))
    for tool, label in TOOLS.items():
        lines.append(f"peak RssAnon {args.factor}N / N, {label}: "
                     f"{large[tool]['rss_anon_mib'] / max(small[tool]['rss_anon_mib'], 1e-9):.2f}")
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="images of the smaller folder (default 500)")
    parser.add_argument("--factor", type=int, default=4, help="the larger folder has factor x n images (default 4)")
    parser.add_argument("--size", type=int, default=64, help="image side the models see, in pixels (default 64)")
    parser.add_argument("--photo-size", type=int, help="side of the generated JPEGs (default --size; State Farm's "
                        "photos are 640 x 480): both tools resize them to --size")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--drivers", type=int, default=26)
    parser.add_argument("--precision", choices=("float32", "mixed"), default="float32",
                        help="both tools' precision (mixed: bfloat16 on CPUs, float16 on GPUs; default float32)")
    parser.add_argument("--repeats", type=_positive, default=1,
                        help="runs of every tool, in turn; the median time is printed (default 1)")
    parser.add_argument("--keep", help="a new or empty folder to keep the folders, configs and results in")
    parser.add_argument("--hand-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--decode-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hand_loop:
        print(json.dumps(hand_loop(pathlib.Path(args.folder), size=args.size, folds=args.folds, epochs=args.epochs,
                                   batch_size=args.batch_size, validate=args.validate,
                                   precision=args.precision)))
        return 0
    if args.decode_only:
        print(decode_throughput(pathlib.Path(args.folder), size=args.size, batch_size=args.batch_size))
        return 0
    try:
        with work_folder(args.keep) as work:
            results = {}
            for n in (args.n, args.factor * args.n):
                folder = make_image_folder(work / f"drivers-{n}", n=n, size=args.photo_size or args.size,
                                           classes=args.classes,
                                           drivers=args.drivers, seed=0)["images"].parent.parent
                print(f"{n:,} images generated; running kfold_clr, then the hand loop ...", file=sys.stderr,
                      flush=True)
                warm_up(folder)
                results[n] = run_tools(folder, n, args=args, work=work)
            print(report(results, args))
    except FileExistsError as error:
        print(f"bench_images: {error}", file=sys.stderr)
        return 2
    return 0


def run_tools(folder, n, *, args, work) -> dict:
    """Every tool's result on `folder`: each run `args.repeats` times, in turn; the median wall time
    and the largest peak memory of its runs (`combined`)."""
    tools = {"kfold_clr": lambda r: run_kfold_clr(folder, args=args, work=work / f"kfold_clr-{n}-{r}"),
             "kfold_clr_scored": lambda r: run_kfold_clr(folder, args=args, work=work / f"kfold_clr-scored-{n}-{r}",
                                                         train_scores=True),
             "hand": lambda r: run_hand_loop(folder, args=args, work=work),
             "hand_val": lambda r: run_hand_loop(folder, args=args, work=work, validate=True)}
    runs = {tool: [] for tool in tools}
    for repeat in range(args.repeats):
        for tool, run in tools.items():
            runs[tool].append(run(repeat))
    return {tool: combined(results) for tool, results in runs.items()}


def combined(results: list) -> dict:
    """One result for repeated runs of a tool: the median wall time, the largest peak memory, the
    first run's decode throughput (kfold_clr's cold cache) and accuracies (the same every run)."""
    import statistics

    max_rss = [r["max_rss_mib"] for r in results if r["max_rss_mib"] is not None]
    return {**results[0], "seconds": statistics.median(r["seconds"] for r in results),
            "rss_anon_mib": max(r["rss_anon_mib"] for r in results), "max_rss_mib": max(max_rss, default=None)}


@contextlib.contextmanager
def work_folder(keep=None):
    """The benchmark's folder: `keep` (new or empty; FileExistsError otherwise), left in place, or
    a new temporary folder, deleted afterwards. Only a folder this function created is ever deleted."""
    if keep is not None:
        work = pathlib.Path(keep)
        if work.is_symlink() or (work.exists() and (not work.is_dir() or any(work.iterdir()))):
            raise FileExistsError(f"--keep {str(keep)!r} is not a new or empty folder; give a new folder")
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-images-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
