"""Benchmark: a State-Farm-sized image folder (22,424 photos at 224 x 224, 10 classes, 26 drivers)
through kfold_clr, measuring wall time and the process tree's peak anonymous memory.

    python benchmarks/bench_full_size.py WORK [--n 22424] [--size 224] [--epochs 5]

WORK is a new or empty folder (several GB: the JPEGs, the pixel cache, the results); the
generated folder is reused when WORK already holds it from an earlier call. Runs, each as
its own process timed from the outside (`bench_images.measured`):

1. `kfold-clr validate` on the small CNN's config, with a cold pixel cache: every image
   decoded once into the memory-mapped uint8 cache;
2. `kfold-clr validate` again: the cache and its channel statistics read back;
3. `kfold-clr run` with a frozen `mobilenet_v3_small` backbone (`weights: null`: nothing can be
   downloaded here, so its accuracy is chance; the point is that the whole run fits): 5 folds x
   2 strategies, the backbone run once per image and the heads trained fused on its features.

Printed: wall seconds, peak RssAnon (MiB, summed over the process tree; the cache's mapped
pages are not anonymous) and `/usr/bin/time -v`'s max RSS, which counts mapped pages too.
"""

import argparse
import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_images import measured  # noqa: E402
from image_folder import TABLE, make_image_folder  # noqa: E402
from kfold_clr.storage.ownership import atomic_write_text  # noqa: E402

STRATEGIES = {"constant": {"schedule": "constant", "lr": 0.01},
              "clr": {"schedule": "clr", "policy": "triangular", "base_lr": 0.002, "max_lr": 0.05,
                      "step_size_epochs": 1}}
MODELS = {"cnn": {"kind": "cnn", "filters": [16, 32, 64], "hidden": [64]},
          "backbone": {"kind": "pretrained", "backbone": "mobilenet_v3_small", "weights": None, "trainable": False,
                       "pooling": "avg", "hidden": [64]}}


def config(work, folder, model, *, size, epochs) -> pathlib.Path:
    experiment = {"name": f"full-size-{model}", "seed": 0,
                  "data": {"source": "images", "path": str(folder / "imgs" / "train"), "table": str(folder / TABLE),
                           "file_column": "img", "groups": "subject", "image_size": [size, size],
                           "cache": str(work / "cache")},
                  "model": MODELS[model],
                  "training": {"epochs": epochs, "batch_size": 32, "optimizer": {"name": "sgd", "momentum": 0.9},
                               "metrics": ["accuracy"]},
                  "cv": {"splitter": "stratified_group", "n_splits": 5, "shuffle": True},
                  "strategies": STRATEGIES, "output": {"dir": str(work / f"results-{model}")}}
    path = work / f"{model}.yaml"
    atomic_write_text(path, yaml.safe_dump(experiment, sort_keys=False))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", help="a new or empty folder, or one an earlier call filled")
    parser.add_argument("--n", type=int, default=22424)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    work = pathlib.Path(args.work).resolve()
    folder = work / "drivers"
    if not (folder / TABLE).is_file():
        if work.exists() and any(work.iterdir()):
            print(f"bench_full_size: {str(work)!r} is neither empty nor an earlier call's folder", file=sys.stderr)
            return 2
        make_image_folder(folder, n=args.n, size=args.size, classes=10, drivers=26, seed=0)
    cnn, backbone = (config(work, folder, model, size=args.size, epochs=args.epochs) for model in ("cnn", "backbone"))
    first = "validate, cold cache" if not (work / "cache").exists() else "validate (cache kept)"
    steps = [(first, ["validate", str(cnn)]), ("validate, warm cache", ["validate", str(cnn)]),
             ("run, frozen backbone", ["run", str(backbone), "--fresh", "-q"])]
    print(f"{args.n:,} images at {args.size} x {args.size}")
    for label, command in steps:
        result = measured([sys.executable, "-m", "kfold_clr", *command], cwd=work)
        max_rss = f"{result['max_rss_mib']:,.0f}" if result["max_rss_mib"] is not None else "n/a"
        print(f"{label:<22} rc {result['returncode']}  wall {result['seconds']:7.1f} s  peak RssAnon "
              f"{result['rss_anon_mib']:7,.0f} MiB  maxRSS {max_rss} MiB", flush=True)
        if result["returncode"] != 0:
            print(result["stderr"][-2000:], file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
