"""Writing a figure to disk: atomically, then closing it (every figure module saves through here)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt

# zlib level of PNG files: 1 writes a photo grid (report/predictions) in about half the time of
# Pillow's default 6, for files a few per cent larger; line plots barely differ.
PNG_COMPRESS_LEVEL = 1

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def save_figure(figure: Figure | Axes, path: os.PathLike | str, *, dpi: int = 110,
                **savefig_options: Any) -> os.PathLike | str:
    """Write ``figure`` to ``path`` atomically (`kfold_clr.storage.ownership.atomic_write`) and close it.

    Args:
        figure: matplotlib Figure or Axes (its figure is saved).
        path: str or path-like. Destination; the format follows the suffix (".png").
        dpi: int. Resolution.
        **savefig_options: passed to ``Figure.savefig`` (e.g. ``bbox_inches="tight"``); a PNG is
            compressed at `PNG_COMPRESS_LEVEL` unless ``pil_kwargs`` say otherwise.

    Returns:
        The path, as given.
    """
    from kfold_clr.storage.ownership import atomic_write

    figure = getattr(figure, "figure", figure)
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    if suffix.lower() == "png":
        savefig_options["pil_kwargs"] = {"compress_level": PNG_COMPRESS_LEVEL, **savefig_options.get("pil_kwargs", {})}
    try:
        atomic_write(path, lambda stream: figure.savefig(stream, dpi=dpi, format=suffix, **savefig_options))
    finally:
        plt.close(figure)
    return path
