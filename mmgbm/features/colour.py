"""Colour statistics of each product photo: an HSV histogram of the non-background pixels plus mean and spread
of RGB and the foreground's share, 199 numbers per image, kept in their own feature store beside the embeddings.

ImageNet embeddings are trained to ignore colour (colour jitter is part of their augmentation), so they name a
product's colour poorly: on the fashion catalogue with colour words removed from the names, a linear model on
EfficientNet-B0 embeddings reaches 57% on baseColour, these statistics alone 57%, and both together 64%.
They cost a millisecond or two per image, so extract-images computes them from the photo it decodes for the
embedding anyway.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

SIZE = (30, 40)  # catalogue photos are 60x80; colour needs no detail
HSV_BINS = (12, 4, 4)
BACKGROUND = 0.92  # pixels with every channel above this are the white studio background
FINGERPRINT = {"kind": "colour", "size": list(SIZE), "hsv_bins": list(HSV_BINS), "background": BACKGROUND, "version": 1}
HISTOGRAM_CELLS = int(np.prod(HSV_BINS))
DIM = HISTOGRAM_CELLS + 7


def colour_statistics(photo: Image.Image) -> np.ndarray:
    """DIM float32 numbers describing the colours of an RGB photo."""
    small = photo.resize(SIZE)
    rgb = np.asarray(small, dtype=np.float32) / 255
    hsv = np.asarray(small.convert("HSV"))
    foreground = rgb.min(axis=2) <= BACKGROUND
    if foreground.sum() < 10:  # a white product on white: use every pixel
        foreground = np.ones_like(foreground)
    bins = [lut[channel] for lut, channel in zip(_hsv_bins(), np.moveaxis(hsv[foreground], 1, 0))]
    hist = np.bincount(np.ravel_multi_index(bins, HSV_BINS), minlength=HISTOGRAM_CELLS) / foreground.sum()
    pixels = rgb[foreground]
    return np.concatenate([hist, pixels.mean(axis=0), pixels.std(axis=0), [foreground.mean()]]).astype(np.float32)


@functools.cache
def _hsv_bins() -> tuple[np.ndarray, ...]:
    """Per HSV channel, the histogram bin of each of its 256 levels: exactly the bin `np.histogramdd` gives the
    level / 255 over (0, 1) (the stored features were made with it), at a tenth of its cost per photo. Levels are
    sorted, so their bins follow from histogramdd's counts."""
    levels = (np.arange(256, dtype=np.uint8).astype(np.float32) / 255)[:, None]
    return tuple(
        np.repeat(np.arange(bins), np.histogramdd(levels, bins=[bins], range=[(0, 1)])[0].astype(int))
        for bins in HSV_BINS
    )
