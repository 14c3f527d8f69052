"""extract-images: robust decoding, incremental/resumable extraction of embeddings and colour statistics, the store
contract, real-weights sanity.

Extraction's bookkeeping is tested with `FakeEncoder` in place of the EfficientNet, so no TensorFlow model is built;
the tests that run a real one are marked slow.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.config import Config, load_config
from mmgbm.errors import MmgbmError
from mmgbm.estimator.products import ProductMatrix
from mmgbm.features import colour, image_runtime, store_lock
from mmgbm.features import images as images_module
from mmgbm.features.image_decoding import UnreadableImage, decode_image, decode_image_bytes, image_sources
from mmgbm.features.image_encoder import BUNDLED_B0_WEIGHTS, ImageEncoder
from mmgbm.features.image_runtime import LEGACY
from mmgbm.features.images import FAILURES_FILE
from mmgbm.stores import colour_store, extract_images, image_store, load_products
from mmgbm.workdir import embedding_dir, image_dir
from tests.conftest import REPO

DEMO = REPO / "mmgbm" / "data" / "demo"
DEMO_PRODUCTS = pd.read_csv(DEMO / "products.csv", dtype={"id": str})
# Products hold image blocks as float16: read back, features equal the stored float32 ones within its rounding.
FLOAT16 = {"rtol": 2.0**-11, "atol": 2.0**-25}


def photo(mode: str = "RGB", size: tuple[int, int] = (60, 80)) -> Image.Image:
    """A real demo photo converted to `mode`, so every format test decodes actual catalogue pixels."""
    im = Image.open(DEMO / DEMO_PRODUCTS.image[0]).convert("RGB").resize(size)
    return im.convert(mode)


def saved(path: Path, im: Image.Image, fmt: str, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    photo(size=(400, 400)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def gray16() -> Image.Image:
    """A 16-bit grayscale photo using the full 0..65535 range, as scanners write them."""
    return Image.fromarray(np.asarray(photo("L"), np.uint16) * 257)


def huge_png_header(path: Path, side: int = 10_000) -> Path:
    """A valid PNG whose header claims side x side pixels (what a decoder must not decode in full; from 15,000 on,
    Pillow refuses even to open it: a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", side, side)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


# name -> (make file in a folder, expected failure reason or None when it must decode)
CASES = {
    "missing.jpg": (lambda p: p, "file not found"),
    "empty.jpg": (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
    "truncated.jpg": (truncated_jpeg, "corrupt image"),
    "garbage.jpg": (lambda p: (p.write_bytes(os.urandom(2000)), p)[1], "not an image"),
    "directory.jpg": (lambda p: (p.mkdir(), p)[1], "not a file"),
    "huge.png": (huge_png_header, "too large"),
    "ok.png": (lambda p: saved(p, photo(), "PNG"), None),
    "ok.gif": (lambda p: saved(p, photo("P"), "GIF"), None),
    "ok.webp": (lambda p: saved(p, photo(), "WEBP"), None),
    "ok.bmp": (lambda p: saved(p, photo(), "BMP"), None),
    "gray.jpg": (lambda p: saved(p, photo("L"), "JPEG"), None),
    "cmyk.jpg": (lambda p: saved(p, photo("CMYK"), "JPEG"), None),
    "alpha.png": (lambda p: saved(p, photo("RGBA"), "PNG"), None),
    "gray16.png": (lambda p: saved(p, gray16(), "PNG"), None),
    "huge.jpg": (lambda p: saved(p, Image.new("L", (10_000, 10_000), 200), "JPEG", quality=50), None),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    for name, (make, _) in CASES.items():
        make(folder / name)
    return folder


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_kind_of_file_decodes_or_fails_with_its_reason(zoo: Path, name: str):
    expected = CASES[name][1]
    if expected is None:
        pixels, stats = decode_image(zoo / name, 48)
        assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8
        assert 0 < pixels.mean() < 255  # real pixels, not a blank
        assert stats.shape == (colour.DIM,) and np.isfinite(stats).all()
    else:
        with pytest.raises(UnreadableImage) as info:
            decode_image(zoo / name, 48)
        assert info.value.reason == expected


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "name", sorted(n for n, (_, reason) in CASES.items() if reason not in ("file not found", "not a file"))
)
def test_posted_bytes_decode_exactly_as_their_file(zoo: Path, name: str):
    """The service decodes a posted photo's bytes without writing a file: same pixels, colours and reasons."""
    data = (zoo / name).read_bytes()
    try:
        expected = decode_image(zoo / name, 48)
    except UnreadableImage as exc:
        with pytest.raises(UnreadableImage) as info:
            decode_image_bytes(data, 48)
        assert info.value.reason == exc.reason
        return
    posted = decode_image_bytes(data, 48)
    assert np.array_equal(posted.pixels, expected.pixels) and np.array_equal(posted.colour, expected.colour)


def test_alpha_becomes_white_background_and_cmyk_keeps_colour(tmp_path: Path):
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert decode_image(saved(tmp_path / "a.png", clear, "PNG"), 8).pixels.min() == 255
    red = Image.new("RGB", (20, 20), (220, 20, 20))
    cmyk = decode_image(saved(tmp_path / "c.jpg", red.convert("CMYK"), "JPEG", quality=95), 8).pixels.astype(int)
    assert cmyk[..., 0].mean() > 180 and cmyk[..., 1].mean() < 80


def test_any_decoder_exception_is_a_corrupt_image(tmp_path: Path, monkeypatch):
    def broken_plugin(im):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr("mmgbm.features.image_decoding.ImageOps.exif_transpose", broken_plugin)
    with pytest.raises(UnreadableImage) as info:
        decode_image(saved(tmp_path / "x.png", photo(), "PNG"), 32)
    assert info.value.reason == "corrupt image" and "unpack requires" in str(info.value)


def test_empty_path_is_its_own_reason():
    with pytest.raises(UnreadableImage) as info:
        decode_image("  ", 32)
    assert info.value.reason == "no image path"


# ---- extraction through the store ------------------------------------------------------------------------------


class FakeEncoder(ImageEncoder):
    """An ImageEncoder without TensorFlow: an image's embedding is its mean colour repeated, so a stored row can be
    traced back to its photo. `log` counts the models built and the images embedded."""

    log: dict[str, int]

    def fit(self) -> "FakeEncoder":
        self.log["fits"] += 1
        return self

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        self.log["embedded"] += len(images)
        return fake_embedding(images, self.dim)


def fake_embedding(images: np.ndarray, dim: int) -> np.ndarray:
    means = images.reshape(len(images), -1, 3).mean(axis=1) / 255
    return np.tile(means, (1, -(-dim // 3)))[:, :dim].astype(np.float32)


@pytest.fixture
def fake_encoder(monkeypatch) -> dict[str, int]:
    """Extraction (from Python or the CLI) uses FakeEncoder; returns its log."""
    log = {"fits": 0, "embedded": 0}
    monkeypatch.setattr(FakeEncoder, "log", log, raising=False)
    monkeypatch.setattr("mmgbm.features.images.ImageEncoder", FakeEncoder)
    return log


def catalogue(
    folder: Path, rows: list[tuple[str, str]], write_config, store: str | None = None, **image_settings
) -> Path:
    pd.DataFrame({"id": [r[0] for r in rows], "image": [r[1] for r in rows]}).to_csv(
        folder / "products.csv", index=False
    )
    image = {"backbone": "b0", "weights": "none", "image_size": 32, "batch_size": 4, "shard_size": 3, **image_settings}
    return write_config(
        {
            "workdir": "work",
            **({"store": store} if store else {}),
            "data": {"splits": {"train": "products.csv"}, "image_column": "image", "images_root": "imgs"},
            "features": {"image": image, "text": {"enabled": False}},
        }
    )


def read_back(cfg: Config, ids: list[str]) -> ProductMatrix:
    """The image blocks of `ids` as training and prediction read them."""
    return load_products(cfg, pd.DataFrame({"id": ids}))[0]


def demo_rows(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(pid, path) for pid, path in DEMO_PRODUCTS[["id", "image"]].values[start : start + n]]


@pytest.fixture
def images_dir(tmp_path: Path, zoo: Path) -> Path:
    folder = tmp_path / "imgs"
    shutil.copytree(DEMO / "images", folder / "images")
    for name in CASES:
        if (zoo / name).exists():
            (shutil.copytree if (zoo / name).is_dir() else shutil.copy)(zoo / name, folder / name)
    return folder


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_inputs_never_stop_a_run_and_are_listed(tmp_path: Path, images_dir: Path, write_config, fake_encoder):
    rows = demo_rows(5) + [(f"z-{name}", name) for name in sorted(CASES)] + [("no-path", "")]
    cfg = load_config(catalogue(tmp_path, rows, write_config))
    summary = extract_images(cfg)

    expected_failures = {f"z-{n}": reason for n, (_, reason) in CASES.items() if reason} | {"no-path": "no image path"}
    assert summary.products == len(rows) and summary.skipped == 0
    assert summary.extracted == len(rows) - len(expected_failures)
    assert sum(summary.failures.values()) == len(expected_failures)
    listed = pd.read_csv(summary.failures_path, dtype=str, keep_default_na=False)
    assert summary.failures_path == image_store(cfg).root / "failures.csv"
    assert dict(zip(listed.id, listed.reason)) == expected_failures
    assert listed.set_index("id").path["z-missing.jpg"] == str(images_dir / "missing.jpg")
    assert "failed" in summary.describe() and "corrupt image: 1" in summary.describe()

    # Read back by id: each product gets its own photo's embedding and colour statistics; failures get NaN rows.
    ids = [r[0] for r in rows] + ["never-heard-of"]
    products = read_back(cfg, ids)
    good = [i for i, pid in enumerate(ids) if pid in dict(rows) and pid not in expected_failures]
    pixels, stats = zip(*(decode_image(images_dir / rows[i][1], 32) for i in good))
    # Held as float16 (half the memory): equal to the stored float32 features within its 11 significant bits.
    assert products.dense["image"].shape == (len(ids), 1280) and products.dense["image"].dtype == np.float16
    np.testing.assert_allclose(products.dense["image"][good], fake_embedding(np.stack(pixels), 1280), **FLOAT16)
    np.testing.assert_allclose(products.dense["image.colour"][good], np.stack(stats), **FLOAT16)
    for block in ("image", "image.colour"):
        assert products.dense_present(block).tolist() == [i in good for i in range(len(ids))]
    # Shards fill to shard_size as they go: 14 products -> 3 + 3 + 3 + 3 + 2, in each store.
    for store in (image_store(cfg), colour_store(cfg)):
        assert [len(pd.read_parquet(s)) for s in store.shards()] == [3, 3, 3, 3, 2]


@pytest.mark.parametrize("on_object_storage", [False, True], ids=["folder", "object-storage"])
def test_reruns_do_only_new_and_previously_failed_products(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, object_store: str, on_object_storage: bool
):
    store = object_store if on_object_storage else None
    config = catalogue(tmp_path, demo_rows(4) + [("late", "later.jpg")], write_config, store)
    first = extract_images(load_config(config))
    assert (first.extracted, first.failures) == (4, {"file not found": 1})
    if on_object_storage:  # shards and the failures list are objects under the URL; the workdir holds no features
        assert str(first.failures_path) == f"{object_store}/image/b0/failures.csv"
        assert len(image_store(load_config(config)).shards()) == 2 and not (tmp_path / "work").exists()

    shutil.copy(images_dir / "ok.png", images_dir / "later.jpg")  # the user fixes the missing file
    config = catalogue(tmp_path, demo_rows(4) + [("late", "later.jpg")] + demo_rows(2, start=10), write_config, store)
    second = extract_images(load_config(config))
    assert (second.skipped, second.extracted, second.failed) == (4, 3, 0)
    assert pd.read_csv(second.failures_path).empty  # rewritten: nothing is missing any more

    third = extract_images(load_config(config))
    assert (third.skipped, third.extracted, third.shards_written) == (7, 0, 0)
    assert fake_encoder["embedded"] == 7  # every image went through the model once
    late = read_back(load_config(config), ["late"])
    assert late.dense_present("image").all() and late.dense_present("image.colour").all()


def test_photos_on_object_storage_are_embedded_as_the_same_files_on_disk(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, object_store
):
    """`data.images_root` as a URL: the same embeddings and colour statistics as from a folder, keys that climb out
    of the root or name another bucket refused unread, one listing tells what changed since the last run."""
    import fsspec

    fs, prefix = fsspec.core.url_to_fs(object_store)
    fs.put(str(images_dir / "images"), f"{prefix}/photos/images", recursive=True)
    good = demo_rows(4)
    rows = good + [
        ("lost", "images/lost.jpg"),
        ("climb", "../secrets/x.jpg"),
        ("elsewhere", "memory://other/x.jpg"),
        ("encoded", "images/%2e%2e/%2e%2e/secrets/x.jpg"),  # an HTTP server would resolve these
        ("through", f"{object_store}/photos/../secrets/x.jpg"),
    ]
    config = catalogue(tmp_path, rows, write_config)
    on_disk = load_config(config)
    remote = load_config(config, {"data.images_root": f"{object_store}/photos", "workdir": str(tmp_path / "remote")})
    extract_images(on_disk)
    first = extract_images(remote)
    assert first.extracted == 4 and first.failures == {"file not found": 1, "outside images_root": 4}
    ids = [pid for pid, _ in good]
    for block in ("image", "image.colour"):
        np.testing.assert_array_equal(read_back(remote, ids).dense[block], read_back(on_disk, ids).dense[block])

    again = extract_images(remote)  # only the failures are tried again
    assert (again.extracted, again.skipped, sum(again.failures.values())) == (0, 4, 5)
    replaced = f"{prefix}/photos/{good[0][1]}"
    fs.pipe_file(replaced, (images_dir / "ok.png").read_bytes())  # the seller uploads a new photo
    changed = extract_images(remote)
    assert (changed.extracted, changed.skipped) == (1, 3)
    pixels, _ = decode_image(images_dir / "ok.png", 32)
    np.testing.assert_allclose(
        read_back(remote, ids[:1]).dense["image"][0], fake_embedding(pixels[None], 1280)[0], **FLOAT16
    )


def test_a_workdir_from_before_colour_extraction_gets_colour_without_a_forward_pass(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    cfg = load_config(catalogue(tmp_path, demo_rows(5), write_config))
    extract_images(cfg)
    ids = [pid for pid, _ in demo_rows(5)]
    stored = read_back(cfg, ids)
    shutil.rmtree(colour_store(cfg).root)  # as an older mmgbm left it: embeddings only
    with pytest.raises(MmgbmError, match="colour; run `mmgbm extract-images` first"):
        read_back(cfg, ids)

    upgrade = extract_images(cfg)
    assert (upgrade.extracted, upgrade.coloured, upgrade.skipped) == (0, 5, 0)
    assert "colour statistics added for 5 products" in upgrade.describe()
    assert fake_encoder == {"fits": 1, "embedded": 5}  # no model built for the upgrade
    np.testing.assert_array_equal(read_back(cfg, ids).dense["image.colour"], stored.dense["image.colour"])


def test_reading_never_writes_the_stores(tmp_path: Path, images_dir: Path, write_config, fake_encoder):
    cfg = load_config(catalogue(tmp_path, demo_rows(3), write_config))
    with pytest.raises(MmgbmError, match="no image features in .*run `mmgbm extract-images` first"):
        read_back(cfg, ["x"])
    extract_images(cfg)
    before = sorted((p, p.stat().st_mtime_ns) for p in cfg.workdir.rglob("*"))
    # A new product with a photo on disk: its image features stay missing until extract-images has run.
    # A stored product whose row now names another photo: its stored features are stale, so missing too.
    ((stored_id, stored_image),) = demo_rows(1)
    other_image = demo_rows(1, start=9)[0][1]
    frame = pd.DataFrame(
        {"id": ["new", stored_id, demo_rows(2)[1][0]], "image": [other_image, stored_image, other_image]}
    )
    products, fingerprints = load_products(cfg, frame)
    assert products.dense_present("image").tolist() == [False, True, False]
    assert products.dense_present("image.colour").tolist() == [False, True, False]
    assert set(fingerprints) == {"image/b0", "image/colour"}
    assert sorted((p, p.stat().st_mtime_ns) for p in cfg.workdir.rglob("*")) == before


def test_changed_settings_refuse_old_shards_until_overwrite_clears_both_stores(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    extract_images(load_config(catalogue(tmp_path, demo_rows(3), write_config)))
    changed = load_config(catalogue(tmp_path, demo_rows(2), write_config, image_size=40))
    with pytest.raises(MmgbmError, match="image_size: stored 32 vs now 40"):
        extract_images(changed)
    assert extract_images(changed, overwrite=True).extracted == 2
    # The product no longer in the catalogue went with the old shards, from both stores.
    expected = {pid for pid, _ in demo_rows(2)}
    assert image_store(changed).present_ids() == colour_store(changed).present_ids() == expected


def test_missing_weights_file_is_a_one_line_error(tmp_path: Path, images_dir: Path, write_config):
    with pytest.raises(MmgbmError, match="weights file .*nope.h5 not found"):
        image_store(load_config(catalogue(tmp_path, demo_rows(1), write_config, weights="nope.h5")))


def test_fingerprint_needs_no_tensorflow(tmp_path: Path, images_dir: Path, write_config):
    config = catalogue(tmp_path, demo_rows(1), write_config, weights=str(BUNDLED_B0_WEIGHTS))
    code = (
        "import sys; from pathlib import Path; from mmgbm.config import load_config; "
        "from mmgbm.stores import image_store; "
        f"s = image_store(load_config(Path({str(config)!r}))); "
        "assert 'tensorflow' not in sys.modules; print(s.fingerprint['weights'], s.root.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["09d9dcf293b96e88", "b0"]  # the bundled file's sha256 prefix


@pytest.fixture
def cpu(monkeypatch) -> dict[str, bool]:
    """What `auto` finds on this machine, as the test sets it: OpenVINO installed, bfloat16 native."""
    found = {"openvino": True, "bfloat16": True}
    monkeypatch.setattr(image_runtime, "openvino_installed", lambda: found["openvino"])
    monkeypatch.setattr(image_runtime, "native_bfloat16", lambda: found["bfloat16"])
    return found


@pytest.mark.parametrize(
    "openvino, bfloat16, chosen, why",
    [
        (True, True, "OpenVINO bfloat16", "OpenVINO is installed, this CPU computes bfloat16 natively"),
        (True, False, "OpenVINO float32", "OpenVINO is installed, this CPU has no native bfloat16"),
        (False, True, "TensorFlow float32", "OpenVINO is not installed, TensorFlow runs fastest in float32"),
    ],
)
def test_auto_picks_the_fastest_runtime_and_precision_and_says_which(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, cpu, monkeypatch, openvino, bfloat16, chosen, why
):
    cpu.update(openvino=openvino, bfloat16=bfloat16)
    built = []
    monkeypatch.setattr(FakeEncoder, "fit", lambda self: built.append((self.runtime, self.precision)) or self)
    cfg = load_config(catalogue(tmp_path, demo_rows(3), write_config))
    summary = extract_images(cfg)
    assert f"embedded by {chosen} (auto: {why})" in summary.describe()
    runtime, precision = chosen.lower().split()
    assert built == [(runtime, precision)]  # what the model was built for
    # The store records the choice; TensorFlow float32 is what stores made before the settings hold.
    expected = {k: v for k, v in {"runtime": runtime, "precision": precision}.items() if v not in LEGACY.values()}
    assert {k: v for k, v in image_store(cfg).fingerprint.items() if k in LEGACY} == expected


def test_a_store_refuses_another_runtime_or_precision_unless_told(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, cpu
):
    tensorflow = {"runtime": "tensorflow", "precision": "float32"}
    extract_images(load_config(catalogue(tmp_path, demo_rows(3), write_config, **tensorflow)))
    # `auto` extends the store as it was made, on this machine that has faster settings.
    more = catalogue(tmp_path, demo_rows(5), write_config)
    summary = extract_images(load_config(more))
    assert (
        summary.extracted == 2 and "embedded by TensorFlow float32 (auto: as the store was made)" in summary.describe()
    )
    # Explicit other settings are refused, writing or reading, naming what differs and the ways out.
    openvino = load_config(more, {"features.image.runtime": "openvino", "features.image.precision": "bfloat16"})
    for use in (extract_images, lambda cfg: read_back(cfg, ["x"])):
        with pytest.raises(
            MmgbmError,
            match="precision: stored 'float32' vs now 'bfloat16'; runtime: stored "
            "'tensorflow' vs now 'openvino'.*accept_other_runtimes: true",
        ):
            use(openvino)
    # Told to accept them, the store is read and extended with both kinds.
    mixed = load_config(
        catalogue(
            tmp_path, demo_rows(7), write_config, runtime="openvino", precision="bfloat16", accept_other_runtimes=True
        )
    )
    assert extract_images(mixed).extracted == 2
    assert read_back(mixed, [pid for pid, _ in demo_rows(7)]).dense_present("image").all()
    # --overwrite starts a new store, which `auto` makes the fastest way.
    summary = extract_images(load_config(catalogue(tmp_path, demo_rows(5), write_config)), overwrite=True)
    assert summary.extracted == 5 and "OpenVINO bfloat16 (auto: OpenVINO is installed" in summary.describe()


def test_cli_options_override_the_config_and_print_the_summary(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    config = catalogue(tmp_path, demo_rows(3) + [("gone", "")], write_config)
    result = CliRunner().invoke(
        app, ["extract-images", "-c", str(config), "--backbone", "b3", "--image-size", "36", "--batch-size", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "3 embedded" in result.output and "no image path: 1" in result.output
    assert "4/4" in result.output and "photos/s" in result.output  # the progress bar
    cfg = load_config(config, {"features.image.backbone": "b3", "features.image.image_size": 36})
    stored = image_store(cfg)
    assert stored.root.name == "b3" and stored.fingerprint["image_size"] == 36 and len(stored.present_ids()) == 3
    assert read_back(cfg, ["gone"]).dense["image"].shape == (1, 1536)


def test_products_without_a_path_need_no_model(tmp_path: Path, images_dir: Path, write_config, fake_encoder):
    summary = extract_images(load_config(catalogue(tmp_path, [("a", ""), ("b", " ")], write_config)))
    assert (summary.extracted, summary.failures) == (0, {"no image path": 2})
    assert fake_encoder["fits"] == 0
    assert "/s" not in summary.describe()  # no rate of photos that were never decoded


def test_configs_without_images_are_told_so_in_one_line(tiny_config: Path):
    result = CliRunner().invoke(app, ["extract-images", "-c", str(tiny_config)])
    assert result.exit_code != 0 and isinstance(result.exception, MmgbmError)
    assert "features.image.enabled: false" in str(result.exception)
    with pytest.raises(MmgbmError, match="no data.image_column"):
        extract_images(load_config(tiny_config, {"features.image.enabled": True}))


def test_an_interrupted_run_keeps_its_finished_shards_and_resumes(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, monkeypatch
):
    rows = demo_rows(20)
    config = catalogue(tmp_path, rows, write_config, shard_size=2, batch_size=2)

    embed_batch = FakeEncoder.embed_batch

    def interrupted(self, images):
        if self.log["embedded"] >= 8:
            raise KeyboardInterrupt  # Ctrl-C during the fifth batch
        return embed_batch(self, images)

    monkeypatch.setattr(FakeEncoder, "embed_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_images(load_config(config))
    monkeypatch.setattr(FakeEncoder, "embed_batch", embed_batch)
    assert len(image_store(load_config(config)).present_ids()) == 8  # four whole shards, nothing partial

    resumed = extract_images(load_config(config))
    assert (resumed.skipped, resumed.extracted) == (8, 12)
    products = read_back(load_config(config), [r[0] for r in rows])
    assert products.dense_present("image").all() and products.dense_present("image.colour").all()


# ---- one extraction at a time ---------------------------------------------------------------------------------


@pytest.fixture
def quick_lock(monkeypatch):
    """Heartbeats and staleness in fractions of a second, and no pause between claims."""
    monkeypatch.setattr(store_lock, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(store_lock, "STALE_S", 0.5)
    monkeypatch.setattr(store_lock, "PAUSE_S", (0.0, 0.01))


@pytest.mark.parametrize("where", ["folder", "object storage"])
def test_a_second_extraction_of_a_store_is_refused_and_nothing_is_embedded_twice(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, object_store, quick_lock, monkeypatch, where
):
    rows = demo_rows(12)
    cfg = load_config(catalogue(tmp_path, rows, write_config, store=object_store if where != "folder" else None))
    embedding, finish = threading.Event(), threading.Event()
    embed_batch = FakeEncoder.embed_batch

    def held(self, images):
        embedding.set()
        finish.wait(30)
        return embed_batch(self, images)

    monkeypatch.setattr(FakeEncoder, "embed_batch", held)
    with ThreadPoolExecutor(1) as other:
        first = other.submit(extract_images, cfg)
        assert embedding.wait(30)
        time.sleep(1.0)  # twice the staleness: only the first run's heartbeat keeps its lock
        with pytest.raises(MmgbmError, match=f"another extraction is writing .*pid {os.getpid()}"):
            extract_images(cfg)
        finish.set()
        assert first.result(timeout=30).extracted == len(rows)
    stored = image_store(cfg).read_table(["id"]).column("id").to_pylist()
    assert sorted(stored) == sorted(pid for pid, _ in rows)  # each product embedded once
    assert extract_images(cfg).skipped == len(rows)  # the lock went with the run that held it


def test_a_killed_runs_lock_stops_others_only_until_it_is_stale(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, quick_lock
):
    cfg = load_config(catalogue(tmp_path, demo_rows(2), write_config))
    lock = image_dir(cfg).root / "writing-1-0123abcd.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 4242, "started": "today", "beat": time.time()}))
    with pytest.raises(MmgbmError, match=f"host elsewhere, pid 4242.*or delete {lock}"):
        extract_images(cfg)
    time.sleep(store_lock.STALE_S)  # killed: no heartbeat since
    assert extract_images(cfg).extracted == 2
    assert not lock.exists()

    # A run killed on this machine is known to be gone at once: its process is.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(ended.stdout), "beat": time.time()}))
    assert extract_images(cfg, overwrite=True).extracted == 2
    assert not lock.exists()


# ---- real models (slow) ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_b3_builds_and_writes_1536_wide_shards(tmp_path: Path, images_dir: Path, write_config):
    cfg = load_config(catalogue(tmp_path, demo_rows(2), write_config, backbone="b3"))
    assert extract_images(cfg).extracted == 2
    assert image_store(cfg).root.name == "b3"
    products = read_back(cfg, [r[0] for r in demo_rows(2)])
    assert products.dense["image"].shape == (2, 1536) and products.dense_present("image").all()


@pytest.mark.slow
def test_weights_of_the_wrong_shape_are_one_line_errors(tmp_path: Path, images_dir: Path, write_config):
    wrong = load_config(catalogue(tmp_path, demo_rows(1), write_config, backbone="b3", weights=str(BUNDLED_B0_WEIGHTS)))
    with pytest.raises(MmgbmError, match="cannot load b3 weights"):
        extract_images(wrong)
    (tmp_path / "text.h5").write_text("not weights")
    with pytest.raises(MmgbmError, match="cannot load b0 weights"):
        ImageEncoder("b0", tmp_path / "text.h5").fit()


# Each runtime and precision against TensorFlow float32, the reference: the least cosine over every demo photo.
COSINE_BOUNDS = {("openvino", "float32"): 0.9999, ("openvino", "bfloat16"): 0.995, ("tensorflow", "bfloat16"): 0.99}


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.fixture(scope="module")
def demo_photos() -> tuple[np.ndarray, np.ndarray]:
    """Every demo photo decoded as extraction decodes it, and its TensorFlow float32 embedding."""
    photos = np.stack([decode_image(DEMO / p, 224).pixels for p in DEMO_PRODUCTS.image])
    return photos, ImageEncoder(weights=BUNDLED_B0_WEIGHTS, runtime="tensorflow", precision="float32").transform(photos)


@pytest.mark.slow
@pytest.mark.parametrize(
    "runtime, precision, hint",
    [
        ("openvino", "float32", "throughput"),
        ("openvino", "bfloat16", "throughput"),
        ("openvino", "bfloat16", "latency"),
        ("tensorflow", "bfloat16", "throughput"),
    ],
)
def test_each_runtime_and_precision_is_within_its_bound_of_tensorflow_float32(demo_photos, runtime, precision, hint):
    import keras

    photos, reference = demo_photos
    encoder = ImageEncoder(weights=BUNDLED_B0_WEIGHTS, runtime=runtime, precision=precision, performance_hint=hint)
    features = encoder.transform(photos)
    assert features.dtype == np.float32 and min_cosine(features, reference) > COSINE_BOUNDS[runtime, precision]
    assert keras.mixed_precision.global_policy().name == "float32"  # put back after building


@pytest.mark.slow
def test_extraction_with_the_default_settings_stores_each_photos_own_embedding(
    tmp_path: Path, images_dir: Path, write_config, demo_photos
):
    """The default (`auto`) runtime with many photos in flight at once: every product still gets its own photo's
    embedding, within the chosen precision's bound of TensorFlow float32."""
    rows = demo_rows(len(DEMO_PRODUCTS))
    config = catalogue(
        tmp_path, rows, write_config, weights=str(BUNDLED_B0_WEIGHTS), image_size=224, batch_size=32, shard_size=100
    )
    result = CliRunner().invoke(app, ["extract-images", "-c", str(config)])
    assert result.exit_code == 0, result.output
    chosen = image_runtime.choose("auto", "auto")
    assert f"{len(rows)} embedded" in result.output and f"embedded by {chosen.describe()}" in " ".join(
        result.output.split()
    )
    stored = read_back(load_config(config), [pid for pid, _ in rows]).dense["image"].astype(np.float32)
    # Held as float16: the cosine is computed in float32 (float16 sums alone are off by ~5e-4).
    bound = COSINE_BOUNDS.get((chosen.runtime, chosen.precision), 0.9999)
    assert min_cosine(stored, demo_photos[1]) > bound


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_shard(tmp_path: Path, images_dir: Path, write_config):
    rows = demo_rows(60)
    config = catalogue(tmp_path, rows, write_config, shard_size=2, batch_size=2)
    store_root = image_store(load_config(config)).root
    run = subprocess.Popen(
        [sys.executable, "-m", "mmgbm", "extract-images", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 90
        while len(list(store_root.glob("part-*.parquet"))) < 3 and time.time() < deadline and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
    finally:
        run.wait()
    # The kill may land between a batch's embedding shard and its colour shard: those products lack colour only.
    embedded, coloured = (
        store.present_ids() for store in (image_store(load_config(config)), colour_store(load_config(config)))
    )
    done_before = len(embedded & coloured)
    assert 6 <= done_before < len(rows), "the run should have been killed part-way"

    resumed = extract_images(load_config(config))
    assert resumed.skipped == done_before and resumed.extracted == len(rows) - len(embedded)
    assert resumed.coloured == len(embedded - coloured)  # no second forward pass for them
    assert read_back(load_config(config), [r[0] for r in rows]).dense_present("image").all()


@pytest.mark.slow
def test_real_weights_give_sane_embeddings_that_match_the_naive_route():
    import keras

    picked = DEMO_PRODUCTS.groupby("articleType").head(6)
    picked = picked[picked.articleType.isin(["Watches", "Flip Flops", "Shirts", "Handbags"])]
    images = np.stack([decode_image(DEMO / p, 224).pixels for p in picked.image])
    encoder = ImageEncoder("b0", BUNDLED_B0_WEIGHTS, batch_size=8, runtime="tensorflow", precision="float32")
    ours = encoder.transform(images)
    assert ours.shape == (len(picked), 1280) and np.isfinite(ours).all()

    # The reference notebooks' route: PIL open + resize, Keras model.predict on float arrays.
    naive = np.stack(
        [np.asarray(Image.open(DEMO / p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in picked.image]
    ).astype(np.float32)
    reference = keras.applications.EfficientNetB0(include_top=False, weights=str(BUNDLED_B0_WEIGHTS), pooling="avg")
    theirs = reference.predict(naive, batch_size=8, verbose=0)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.999

    # Frozen ImageNet features group products by type: leave-one-out nearest neighbour finds the type.
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    similarity = unit @ unit.T - 2 * np.eye(len(unit))
    labels = picked.articleType.to_numpy()
    assert (labels[similarity.argmax(1)] == labels).mean() >= 0.9


# ---- hostile paths and changed photos ---------------------------------------------------------------------------


def test_paths_outside_images_root_and_special_files_are_refused_without_opening(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, monkeypatch
):
    os.mkfifo(images_dir / "pipe.jpg")  # opening it would block for ever
    (images_dir / "escape.jpg").symlink_to(DEMO / DEMO_PRODUCTS.image[0])  # a photo, but outside images_root
    (images_dir / "inside.jpg").symlink_to(images_dir / DEMO_PRODUCTS.image[1])
    huge_png_header(images_dir / "bomb.png", 15_000)
    outside = str(DEMO / DEMO_PRODUCTS.image[2])
    rows = [
        ("fifo", "pipe.jpg"),
        ("nul", "images/a\0b.jpg"),
        ("dotdot", "../products.csv"),
        ("absolute", outside),
        ("symlink", "escape.jpg"),
        ("inside-link", "inside.jpg"),
        ("bomb", "bomb.png"),
        ("ok", DEMO_PRODUCTS.image[3]),
    ]
    config = catalogue(tmp_path, rows, write_config)
    result = CliRunner().invoke(app, ["extract-images", "--config", str(config)])
    assert result.exit_code == 0, result.output
    where, name = embedding_dir(load_config(config)), FAILURES_FILE
    listed = pd.read_csv(where.address(name), dtype=str, keep_default_na=False)
    assert dict(zip(listed.id, listed.reason)) == {
        "fifo": "not a file",
        "nul": "invalid path",
        "dotdot": "outside images_root",
        "absolute": "outside images_root",
        "symlink": "outside images_root",
        "bomb": "too large",
    }
    assert fake_encoder["embedded"] == 2
    # The sources training and predict read are resolved a folder at a time: the same refusals.
    paths = [str(images_dir / name) for name in ("escape.jpg", "inside.jpg", "../products.csv", "pipe.jpg")]
    assert [s is not None for s in image_sources(paths, images_dir, images_dir)] == [False, True, False, False]

    # Reading for training or prediction never opens an image of these (colour comes from the store; predict's
    # on-the-fly embedding leaves out what extraction refused), so a FIFO or a decompression bomb named by a table
    # cannot hang or crash it.
    opener = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("an image was opened while reading features"))
    frame = pd.read_csv(tmp_path / "products.csv", dtype=str)
    said = []
    assert load_products(load_config(config), frame, embed_new_photos=said.append)[0].dense_present("image").sum() == 2
    assert said == []

    allowed = load_config(config)
    allowed.data.allow_absolute_image_paths = True
    monkeypatch.setattr(Image, "open", opener)  # only this patch goes: the encoder stays the fake one
    fake_encoder.update(fits=0, embedded=0)
    assert extract_images(allowed).extracted == 2  # the absolute path and the outward symlink
    assert fake_encoder["embedded"] == 2


def test_a_changed_photo_is_missing_until_extracted_again(tmp_path: Path, images_dir: Path, write_config, fake_encoder):
    rows = demo_rows(2)
    cfg = load_config(catalogue(tmp_path, rows, write_config))
    extract_images(cfg)
    changed = images_dir / rows[0][1]
    shutil.copy(images_dir / demo_rows(1, start=5)[0][1], changed)  # a new photo under the same name
    frame = pd.DataFrame({"id": [r[0] for r in rows], "image": [r[1] for r in rows]})
    assert load_products(cfg, frame)[0].dense_present("image").tolist() == [False, True]
    fake_encoder.update(embedded=0)
    summary = extract_images(cfg)
    assert fake_encoder["embedded"] == 1 and summary.skipped == 1
    products = load_products(cfg, frame)[0]
    assert products.dense_present("image").all()
    new_pixels = decode_image(changed, 32).pixels[None]
    np.testing.assert_allclose(products.dense["image"][0], fake_embedding(new_pixels, 1280)[0], **FLOAT16)
    # Once every photo of the first extraction is embedded again, its shard is gone from both stores.
    first = image_store(cfg).shards()[0]
    shutil.copy(images_dir / demo_rows(1, start=6)[0][1], images_dir / rows[1][1])
    extract_images(cfg)
    assert len(image_store(cfg).shards()) == 2 and first not in image_store(cfg).shards()
    assert len(colour_store(cfg).shards()) == 2
    assert load_products(cfg, frame)[0].dense_present("image").all()


def test_predict_embeds_photos_the_store_lacks_in_memory_and_writes_nothing(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    rows = demo_rows(3)
    cfg = load_config(catalogue(tmp_path, rows[:2], write_config))
    extract_images(cfg)
    changed = images_dir / rows[0][1]
    shutil.copy(images_dir / demo_rows(1, start=5)[0][1], changed)  # a new photo under a stored product's name
    shards = sorted(image_store(cfg).shards())
    frame = pd.DataFrame({"id": [r[0] for r in rows] + ["no-photo"], "image": [r[1] for r in rows] + [None]})
    said = []
    products = load_products(cfg, frame, embed_new_photos=said.append)[0]
    assert products.dense_present("image").tolist() == [True, True, True, False]
    assert len(said) == 1 and said[0].startswith("2 products have a photo that is not in the image store")
    fresh = np.stack([decode_image(images_dir / p, 32).pixels for p in (rows[0][1], rows[2][1])])
    np.testing.assert_allclose(products.dense["image"][[0, 2]], fake_embedding(fresh, 1280), **FLOAT16)
    np.testing.assert_allclose(products.dense["image.colour"][0], decode_image(changed, 32).colour, **FLOAT16)
    assert sorted(image_store(cfg).shards()) == shards  # extraction stays the only writer
    assert not load_products(cfg, frame)[0].dense_present("image")[[0, 2]].any()


# ---- a photo is embedded once, whatever its path, times or product; removed products leave the store -------------


def copied_with_new_times(folder: Path, to: Path) -> Path:
    """`folder` copied as a restore or a sync to another disk does it: the same bytes, every file with a new time."""
    shutil.copytree(folder, to, copy_function=shutil.copyfile)
    later = time.time() + 60
    for path in to.rglob("*"):
        os.utime(path, (later, later))
    return to


def extract_cli(*args: str) -> str:
    """`mmgbm extract-images` with `args`: what it printed, in one line (rich wraps it to the terminal)."""
    result = CliRunner().invoke(app, ["extract-images", *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The paths extraction reads to hash, in the order it does."""
    read: list[str] = []
    hash_file = images_module.content_hash

    def counting(path):
        read.append(str(path))
        return hash_file(path)

    monkeypatch.setattr(images_module, "content_hash", counting)
    return read


def test_a_photo_folder_copied_to_a_new_root_is_not_embedded_again(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder, hashed
):
    rows = demo_rows(5)
    config = catalogue(tmp_path, rows, write_config)
    assert "5 embedded" in extract_cli("-c", str(config))
    ids = [pid for pid, _ in rows]
    before = read_back(load_config(config), ids)
    assert len(hashed) == 5  # a new photo is hashed once, beside its decode

    moved = copied_with_new_times(images_dir, tmp_path / "restored")
    hashed.clear()
    again = extract_cli("-c", str(config), "--data.images_root", str(moved))
    assert "0 embedded" in again and "5 photos unchanged under a new path or time" in again
    assert fake_encoder["embedded"] == 5 and len(hashed) == 5  # read to hash, never decoded nor embedded
    cfg = load_config(config, {"data.images_root": str(moved)})
    after = read_back(cfg, ids)  # read as present from the new root: each row records where its photo is now
    for block in ("image", "image.colour"):
        assert after.dense_present(block).all()
        np.testing.assert_array_equal(after.dense[block], before.dense[block])
    assert len(image_store(cfg).shards()) == 2 and len(colour_store(cfg).shards()) == 2  # the old rows compacted

    hashed.clear()
    unchanged = extract_images(cfg)
    assert (unchanged.skipped, unchanged.extracted, unchanged.moved, hashed) == (5, 0, 0, [])  # one listing only


def test_an_identical_photo_is_embedded_once_for_every_product_that_has_it(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    (one, path), (other, other_path) = demo_rows(2)
    shutil.copyfile(images_dir / path, images_dir / "same-bytes.jpg")
    shutil.copyfile(images_dir / "truncated.jpg", images_dir / "truncated-too.jpg")
    rows = [(one, path), ("same-file", path), ("same-bytes", "same-bytes.jpg"), (other, other_path)]
    rows += [("bad", "truncated.jpg"), ("bad-too", "truncated-too.jpg")]
    cfg = load_config(catalogue(tmp_path, rows, write_config))
    summary = extract_images(cfg)
    assert fake_encoder["embedded"] == 2 and (summary.extracted, summary.shared) == (2, 2)
    assert summary.failures == {"corrupt image": 2}  # the same bytes fail the same way, each product listed
    assert "2 photos identical to another product's: its embedding copied" in summary.describe()
    ids = [pid for pid, _ in rows]
    stored = read_back(cfg, ids)
    assert stored.dense_present("image").tolist() == [True] * 4 + [False] * 2
    np.testing.assert_array_equal(stored.dense["image"][1:3], stored.dense["image"][[0, 0]])
    np.testing.assert_array_equal(stored.dense["image.colour"][1:3], stored.dense["image.colour"][[0, 0]])

    # A product added later with a photo stored for another product copies its rows: no decode, no forward pass.
    shutil.copyfile(images_dir / other_path, images_dir / "later.jpg")
    cfg = load_config(catalogue(tmp_path, rows + [("later", "later.jpg")], write_config))
    later = extract_images(cfg)
    assert (fake_encoder["embedded"], later.extracted, later.shared, later.skipped) == (2, 0, 1, 4)
    np.testing.assert_array_equal(read_back(cfg, ["later"]).dense["image"], stored.dense["image"][[3]])


def test_rows_stored_before_hashes_get_them_once_and_then_survive_a_move(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    rows = demo_rows(4)
    cfg = load_config(catalogue(tmp_path, rows, write_config))
    extract_images(cfg)
    for store in (image_store(cfg), colour_store(cfg)):  # as an mmgbm that kept no hashes wrote them
        for shard in store.shards():
            pq.write_table(pq.read_table(shard).drop_columns(["content"]), shard)
    upgraded = extract_images(cfg)
    assert (upgraded.extracted, upgraded.hashed, upgraded.skipped) == (0, 4, 4)
    assert "content hashes recorded for 4 photos" in upgraded.describe()
    moved = load_config(
        catalogue(tmp_path, rows, write_config),
        {"data.images_root": str(copied_with_new_times(images_dir, tmp_path / "moved"))},
    )
    assert (extract_images(moved).moved, fake_encoder["embedded"]) == (4, 4)


def test_products_in_no_split_leave_the_stores_unless_told_to_keep_them(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    rows = demo_rows(5)
    config = catalogue(tmp_path, rows, write_config)
    extract_cli("-c", str(config))
    config = catalogue(tmp_path, rows[:2] + rows[3:4], write_config)  # the feed dropped two products
    assert "pruned" not in extract_cli("-c", str(config), "--no-prune")
    cfg = load_config(config)
    assert len(image_store(cfg).present_ids()) == 5

    # features.prune is on by default; two of five products is more than features.max_prune lets go at once
    pruned = extract_cli("-c", str(config), "--features.max_prune", "0.5")
    assert "2 products no longer in any split pruned" in pruned
    left = {rows[0][0], rows[1][0], rows[3][0]}
    assert image_store(cfg).present_ids() == left and colour_store(cfg).present_ids() == left
    assert read_back(cfg, sorted(left)).dense_present("image").all() and fake_encoder["embedded"] == 5
    again = extract_cli("-c", str(config))
    assert "pruned" not in again and "3 already stored" in again
    off = load_config(config, {"features.prune": False})
    assert not extract_images(off).pruned
