"""The colour statistics of product photos, as extraction takes them from the decoded photo.

That they are stored by extract-images and read back by id is tested with the rest of extraction (test_images.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgbm.features.colour import BACKGROUND, DIM, HSV_BINS, SIZE, colour_statistics
from mmgbm.features.image_decoding import decode_image


def red_shirt(background: list[int]) -> np.ndarray:
    """A 60x80 photo: a red shirt filling a quarter of the frame, on `background` (RGB or RGBA)."""
    photo = np.full((80, 60, len(background)), background, dtype=np.uint8)
    photo[20:60, 15:45] = [200, 10, 10, 255][: len(background)]
    return photo


@pytest.mark.parametrize(("name", "background"), [("white.jpg", [255, 255, 255]), ("clear.png", [0, 0, 0, 0])])
def test_colour_statistics_see_the_product_not_the_background(tmp_path: Path, name: str, background: list[int]):
    Image.fromarray(red_shirt(background)).save(tmp_path / name)
    stats = decode_image(tmp_path / name, 224).colour
    assert stats.shape == (DIM,)
    mean_rgb, share = stats[-7:-4], stats[-1]
    assert mean_rgb[0] > 0.6 and mean_rgb[1] < 0.2  # the red shirt, not the white studio or the transparency
    assert share == pytest.approx(0.25, abs=0.05)


def test_the_hsv_histogram_is_numpys_histogram_of_the_photo():
    """Stored colour features were made with np.histogramdd; the faster binning must give the very same numbers."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        photo = Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8))
        small = photo.resize(SIZE)
        hsv = np.asarray(small.convert("HSV"), dtype=np.float32) / 255
        foreground = (np.asarray(small, dtype=np.float32) / 255).min(axis=2) <= BACKGROUND
        expected = np.histogramdd(hsv[foreground], bins=HSV_BINS, range=((0, 1),) * 3)[0].ravel() / foreground.sum()
        assert np.array_equal(colour_statistics(photo)[:-7], expected.astype(np.float32))
