"""Figures are saved as PNG at a fast zlib level (`PNG_COMPRESS_LEVEL`): a photo grid in about half
the time; the file is still a PNG of the same picture."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from kfold_clr.plots import saving  # noqa: E402


def _figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return fig


def test_a_png_is_written_at_the_fast_level_with_the_same_pixels(tmp_path, monkeypatch):
    fast = saving.save_figure(_figure(), tmp_path / "fast.png")
    monkeypatch.setattr(saving, "PNG_COMPRESS_LEVEL", 9)
    small = saving.save_figure(_figure(), tmp_path / "small.png")
    assert fast.stat().st_size > small.stat().st_size  # level 1 vs 9: the level was passed on
    assert np.array_equal(np.asarray(Image.open(fast)), np.asarray(Image.open(small)))


def test_given_pil_options_win_and_other_formats_get_none(tmp_path):
    default = saving.save_figure(_figure(), tmp_path / "default.png")
    asked = saving.save_figure(_figure(), tmp_path / "asked.png", pil_kwargs={"compress_level": 9})
    assert asked.stat().st_size < default.stat().st_size
    assert saving.save_figure(_figure(), tmp_path / "figure.svg").read_text().lstrip().startswith("<?xml")
