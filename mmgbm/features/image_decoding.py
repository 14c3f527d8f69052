"""Turning one image file into a square RGB uint8 array, or a short reason why it cannot be done.

Catalogue images are whatever sellers uploaded: any format PIL reads, any mode (palette, grayscale, CMYK, 16-bit,
alpha), EXIF-rotated phone photos, truncated downloads and now and then a huge scan. Every such file either comes
out as a (size, size, 3) array, together with its colour statistics taken from the same decode, or raises
`UnreadableImage` with one of the fixed reasons below, so one bad file costs one product's features and never the run.
Only regular files are ever opened (a FIFO would block a reader for ever, a device could be endless), and with an
`inside` folder, only files that resolve into it after `..` and symbolic links, so a catalogue row cannot make
mmgbm read /etc/passwd. Photos on object storage (URLs, mmgbm.features.photo_urls) are fetched whole, and with an
`inside` root URL only keys under it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
from pathlib import Path
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmgbm.features import photo_urls
from mmgbm.features.colour import colour_statistics
from mmgbm.urls import is_url

NO_PATH = "no image path"
BAD_PATH = "invalid path"
OUTSIDE_ROOT = "outside images_root"
NOT_FOUND = "file not found"
NOT_A_FILE = "not a file"
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
CORRUPT = "corrupt image"
TOO_LARGE = "too large"
UNREACHABLE = "storage unreachable"  # a photo on object storage that could not be fetched: retried next run
REASONS = (NO_PATH, BAD_PATH, OUTSIDE_ROOT, NOT_FOUND, NOT_A_FILE, EMPTY, NOT_AN_IMAGE, CORRUPT, TOO_LARGE, UNREACHABLE)

# Decoding is bounded by pixels actually decoded (after JPEG draft scaling): 64 Mpx of RGB is ~200 MB per decode
# thread, which keeps a few parallel decodes far below the 3 GiB the whole extraction may use.
MAX_DECODE_PIXELS = 64_000_000
T = TypeVar("T")
# 128 bits of BLAKE2b: fast to compute, and far too many for two different photos of any catalogue to share one.
CONTENT_HASH = functools.partial(hashlib.blake2b, digest_size=16)
# Image backgrounds in catalogues are white; transparent pixels become white rather than whatever RGB they hide.
BACKGROUND = (255, 255, 255)


class UnreadableImage(Exception):
    """An image that yields no features; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class DecodedImage(NamedTuple):
    pixels: np.ndarray  # (size, size, 3) uint8 RGB, the encoder's input
    colour: np.ndarray  # colour statistics (mmgbm.features.colour) of the whole photo


def decode_image(path: str | os.PathLike[str], size: int, inside: Path | str | None = None) -> DecodedImage:
    """The image at `path` (or URL) squashed to the square as Keras' image loaders do, and its colour statistics;
    with `inside`, a path that resolves outside that folder is refused before anything is opened."""
    check_image_file(path, inside)
    return _decoded(image_file(path), size)


def image_file(path: str | os.PathLike[str]) -> str | os.PathLike[str] | io.BytesIO:
    """What PIL opens for `path`: the path of a local file, the fetched bytes of a URL's object."""
    if not is_url(path):
        return path
    try:
        data = photo_urls.fetch(str(path))
    except FileNotFoundError:
        raise UnreadableImage(NOT_FOUND, str(path)) from None
    except Exception as exc:  # each storage client has its own errors for a dropped connection or a refusal
        raise UnreadableImage(UNREACHABLE, f"{type(exc).__name__}: {exc}") from None
    if not data:
        raise UnreadableImage(EMPTY, str(path))
    return io.BytesIO(data)


def decode_image_bytes(data: bytes, size: int) -> DecodedImage:
    """`decode_image` of a file's bytes (a photo posted to the service): the same decode, with no file."""
    if not data:
        raise UnreadableImage(EMPTY)
    return _decoded(io.BytesIO(data), size)


def thumbnail_jpeg(path: str | os.PathLike[str], box: tuple[int, int], inside: Path | str | None = None) -> bytes:
    """The image at `path` shrunk to fit `box`, as JPEG bytes (a report's picture): the checks and the decode of
    `decode_image`, so a file refused there is refused here for the same reason."""
    check_image_file(path, inside)

    def shrunk(rgb: Image.Image) -> bytes:
        rgb.thumbnail(box)
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=80)
        return out.getvalue()

    return _with_rgb(image_file(path), max(box), shrunk)


def _decoded(source: str | os.PathLike[str] | io.BytesIO, size: int) -> DecodedImage:
    def square(rgb: Image.Image) -> DecodedImage:
        pixels = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        return DecodedImage(pixels, colour_statistics(rgb))

    return _with_rgb(source, size, square)


def _with_rgb(source: str | os.PathLike[str] | io.BytesIO, size: int, use: Callable[[Image.Image], T]) -> T:
    """`use` of the image as RGB (upright, alpha on white, 16-bit scaled), decoded at no less than `size` pixels."""
    try:
        with Image.open(source) as im:
            # JPEG can decode at 1/2, 1/4 or 1/8 scale for almost nothing: a 10,000 px photo never exists in full.
            im.draft("RGB", (size, size))
            width, height = im.size
            if width * height > MAX_DECODE_PIXELS:
                raise UnreadableImage(TOO_LARGE, f"{width}x{height} pixels")
            return use(_to_rgb(ImageOps.exif_transpose(im)))
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(TOO_LARGE, str(exc)) from None
    except UnidentifiedImageError as exc:
        raise UnreadableImage(NOT_AN_IMAGE, str(exc)) from None
    except UnreadableImage:
        raise
    except Exception as exc:
        # Format plugins report malformed data as OSError, SyntaxError, ValueError, struct.error, IndexError ...;
        # whatever a hostile file triggers in a decoder must cost that product only, never the run.
        raise UnreadableImage(CORRUPT, f"{type(exc).__name__}: {exc}") from None


def check_image_file(
    path: str | os.PathLike[str], inside: Path | str | None = None, resolve: Callable[[str], str] = os.path.realpath
) -> os.stat_result | None:
    """The file's stat when it may be opened as an image; UnreadableImage otherwise. Only stats, never opens. A URL
    is checked for where it points only (None): fetching it tells the rest, in the one request it costs. `resolve`
    gives a path's real path (a `FolderResolver` for many files)."""
    text = str(path)
    if not text.strip():
        raise UnreadableImage(NO_PATH)
    if "\0" in text:  # the OS cannot even be asked about such a name
        raise UnreadableImage(BAD_PATH, repr(text))
    if is_url(text) or (inside is not None and is_url(inside)):
        if inside is not None and not (is_url(text) and photo_urls.inside(text, str(inside))):
            raise UnreadableImage(OUTSIDE_ROOT, text)
        return None
    if inside is not None and not _within(resolve(text), resolve(str(inside))):
        raise UnreadableImage(OUTSIDE_ROOT, text)
    try:
        info = os.stat(text)
    except (FileNotFoundError, NotADirectoryError):
        raise UnreadableImage(NOT_FOUND, text) from None
    except (OSError, ValueError) as exc:
        raise UnreadableImage(NOT_FOUND, str(exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableImage(NOT_A_FILE, text)
    if info.st_size == 0:
        raise UnreadableImage(EMPTY, text)
    return info


def image_sources(paths: list[str], root: Path | str, inside: Path | str | None) -> list[str | None]:
    """`image_source` of every path; under a root URL from one listing of the root instead of a request each."""
    if not is_url(root):
        resolve = FolderResolver()
        return [image_source(path, root, inside, resolve) for path in paths]
    usable = []
    for path in paths:
        try:
            check_image_file(path, inside)
            usable.append(path)
        except UnreadableImage:
            usable.append("")
    found = photo_urls.versions(str(root), usable)
    return [f"{photo_urls.relative(p, str(root))}|{found[p]}" if p in found else None for p in usable]


class FolderResolver:
    """`os.path.realpath` for the many photos of one listing, each folder resolved once: resolving every photo's
    path component by component took 0.7 s of reading 10,000 stored photos' sources. A photo that is itself a
    symbolic link is resolved whole."""

    def __init__(self):
        self._folders: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        if folder not in self._folders:
            self._folders[folder] = os.path.realpath(folder)
        candidate = os.path.join(self._folders[folder], name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def image_source(
    path: str | os.PathLike[str], root: Path, inside: Path | None, resolve: Callable[[str], str] = os.path.realpath
) -> str | None:
    """What an embedding of this image is made from (path, size, modification time), or None when the file cannot
    be used (`inside` as for `check_image_file`): a product whose stored source differs has a new photo. The path
    is taken relative to the images `root`, so machines that mount a shared images folder at different places
    agree."""
    try:
        info = check_image_file(path, inside, resolve)
    except UnreadableImage:
        return None
    if info is None:  # a URL beside a folder root: no file (mmgbm.features.photos refuses or fetches it)
        return None
    return f"{_relative(str(path), str(root))}|{info.st_size}|{info.st_mtime_ns}"


def content_hash(path: str | os.PathLike[str]) -> str | None:
    """A hash of the file's bytes (what an embedding is made from, whatever the file's name, folder or times), or
    None where it cannot be read now. Only for paths `image_source` accepted: regular files, where allowed."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, CONTENT_HASH).hexdigest()
    except OSError:
        return None


def _within(path: str, folder: str) -> bool:
    """Whether a real path lies in a real folder (`Path.is_relative_to` of the two, without building Paths: that
    was most of reading 10,000 stored photos' sources)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _relative(path: str, root: str) -> str:
    """`os.path.relpath(path, root)`, cut from the absolute path where the photo lies under the root: relpath
    splits both paths into their components for every photo."""
    full, base = os.path.abspath(path), os.path.abspath(root)
    return full[len(base) + 1 :] if full.startswith(base + os.sep) else os.path.relpath(full, base)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float grayscale: PIL's convert("RGB") clips these to 255 instead of scaling them down.
        depth = 65535.0 if im.mode != "F" else 1.0
        gray = np.asarray(im, dtype=np.float32) * (255.0 / depth)
        im = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im if im.mode == "RGB" else im.convert("RGB")
