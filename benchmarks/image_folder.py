"""Generate a folder shaped like Kaggle's State Farm distracted-driver set, with a learnable signal.

    python benchmarks/image_folder.py OUT --n 4000 --size 128 --classes 10 --drivers 26 [--seed 0]

writes

    OUT/imgs/train/c0/img_<id>.jpg ... OUT/imgs/train/c9/...   one folder per class
    OUT/driver_imgs_list.csv                                   subject,classname,img (one row per image)

Each image is an S x S JPEG: a driver's own background (tint, lighting gradient) with noise,
and one bright shape whose kind (circle, square, triangle, horizontal or vertical bar) and side
of the picture (left or right) give the class, at a jittered place, size and colour. A small
CNN learns it; the driver's tint is a nuisance that group splits keep out of validation.
Every image is drawn from (seed, its index) alone, so the same arguments give the same bytes.
An existing non-empty OUT is never touched.
"""

import argparse
import csv
import io
import pathlib
import sys

import numpy as np
from PIL import Image, ImageDraw

from kfold_clr.storage.ownership import atomic_write_text, guard

SHAPES = ("circle", "square", "triangle", "hbar", "vbar")
TABLE = "driver_imgs_list.csv"


def _driver_look(seed, driver):
    """A driver's background colour (RGB 0..255) and lighting direction."""
    rng = np.random.default_rng([seed, 1, driver])
    return rng.uniform(40, 170, size=3), rng.uniform(0, 2 * np.pi)


def draw_image(size, label, driver, *, seed, index):
    """One image of class `label` taken by `driver` (a PIL image)."""
    rng = np.random.default_rng([seed, 2, index])
    tint, angle = _driver_look(seed, driver)
    grid = np.linspace(-1.0, 1.0, size)
    light = np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]
    background = tint[None, None, :] * (1.0 + 0.25 * light[:, :, None]) + rng.normal(0, 12, (size, size, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    shape, side = SHAPES[label % len(SHAPES)], label // len(SHAPES) % 2
    radius = size * rng.uniform(0.13, 0.2)
    centre_x = size * (0.3 if side == 0 else 0.7) + rng.normal(0, size * 0.04)
    centre_y = size * rng.uniform(0.3, 0.7)
    colour = tuple(int(v) for v in np.clip(255 - tint * rng.uniform(0.2, 0.6) + rng.normal(0, 20, 3), 0, 255))
    box = [centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius]
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(centre_x, box[1]), (box[0], box[3]), (box[2], box[3])], fill=colour)
    elif shape == "hbar":
        draw.rectangle([box[0], centre_y - radius / 3, box[2], centre_y + radius / 3], fill=colour)
    else:
        draw.rectangle([centre_x - radius / 3, box[1], centre_x + radius / 3, box[3]], fill=colour)
    return image


def make_image_folder(out, *, n=4000, size=128, classes=10, drivers=26, seed=0, quality=90):
    """Write a State-Farm-shaped folder at `out` (which must not exist or be empty).

    Every driver has images of every class (as far as `n` allows); file names are
    unique random ids, as in the original set.

    Returns:
        dict with `images` (the folder of class folders), `table` (the CSV) and `n`.

    Raises:
        FileExistsError: `out` exists and is not an empty folder.
    """
    out = pathlib.Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise FileExistsError(f"{str(out)!r} exists and is not an empty folder; choose a new one")
    if not (2 <= classes <= 10) or drivers < 1 or n < classes or size < 8:
        raise ValueError(f"need 2 <= classes <= 10, drivers >= 1, n >= classes and size >= 8; got "
                         f"classes={classes}, drivers={drivers}, n={n}, size={size}")
    images = out / "imgs" / "train"
    for label in range(classes):
        (images / f"c{label}").mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng([seed, 0]).choice(max(10 * n, 100_000), size=n, replace=False)
    rows = []
    for index in range(n):
        label, driver = index % classes, (index // classes) % drivers
        name = f"img_{ids[index]}.jpg"
        with open(guard(images / f"c{label}" / name), "xb") as stream:  # a new file, never through a link
            draw_image(size, label, driver, seed=seed, index=index).save(stream, format="JPEG", quality=quality)
        rows.append({"subject": f"p{driver:03d}", "classname": f"c{label}", "img": name})
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=["subject", "classname", "img"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / TABLE, table.getvalue())
    return {"images": images, "table": out / TABLE, "n": n}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="a new (or empty) folder")
    parser.add_argument("--n", type=int, default=4000, help="images (default 4000)")
    parser.add_argument("--size", type=int, default=128, help="side of each square JPEG in pixels (default 128)")
    parser.add_argument("--classes", type=int, default=10, help="class folders c0.. (2 to 10, default 10)")
    parser.add_argument("--drivers", type=int, default=26, help="drivers (subjects) in the table (default 26)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        made = make_image_folder(args.out, n=args.n, size=args.size, classes=args.classes,
                                 drivers=args.drivers, seed=args.seed)
    except (FileExistsError, ValueError) as error:
        print(f"image_folder: {error}", file=sys.stderr)
        return 2
    print(f"{made['n']} images in {made['images']}, table {made['table']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
