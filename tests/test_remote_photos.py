"""Photos by http(s) URL (data.remote_images): fetched from real HTTP servers on 127.0.0.1 that misbehave in every
way a CDN does, through the CLI; re-runs ask the server instead of downloading again; addresses that are not
public are refused unless listed. No test reaches any address but 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.config import PhotoFetchConfig, load_config
from mmgbm.features.image_decoding import decode_image
from mmgbm.stores import extract_images
from mmgbm.features.photo_fetch import PhotoFetcher, photo_candidates
from tests.photo_server import photo_server
from tests.test_images import (  # noqa: F401 (fixtures)
    FLOAT16,
    catalogue,
    demo_rows,
    fake_embedding,
    fake_encoder,
    images_dir,
    read_back,
    zoo,
)

# Seconds, not minutes: the bad hosts below cost the test what they would cost a user with these settings.
QUICK = {"connect_timeout": 1.0, "read_timeout": 1.0, "total_timeout": 2.0, "backoff": 0.01, "tries": 3}


def remote_catalogue(folder: Path, rows: list[tuple[str, str]], write_config, **fetch) -> Path:
    """A Merchant Center feed (tab-separated) whose image_link values are URLs on the test servers (a relative one
    stays a file under `imgs/`); the servers' 127.0.0.1 is listed, as a user lists an internal CDN."""
    pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "title": [f"product {r[0]}" for r in rows],
            "image_link": [r[1] for r in rows],
            "availability": "in stock",
            "price": "15.00 USD",
        }
    ).to_csv(folder / "feed.tsv", sep="\t", index=False)
    return write_config(
        {
            "workdir": "work",
            "data": {
                "splits": {"train": "feed.tsv"},
                "image_column": "image_link",
                "images_root": "imgs",
                "remote_images": True,
                "remote_image_hosts": ["127.0.0.1"],
                "fetch": {**QUICK, **fetch},
            },
            "features": {
                "image": {"backbone": "b0", "weights": "none", "image_size": 32, "batch_size": 4, "shard_size": 3},
                "text": {"enabled": False},
            },
        }
    )


def failures(cfg_path: Path) -> dict[str, str]:
    listed = pd.read_csv(cfg_path.parent / "work/features/image/b0/failures.csv", dtype=str, keep_default_na=False)
    return dict(zip(listed["id"], listed["reason"]))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_feed_on_two_hosts_embeds_every_photo_and_lists_every_bad_url_with_its_reason(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    good = demo_rows(6)
    with photo_server(images_dir) as a, photo_server(images_dir) as b:
        rows = [(pid, f"{(a, b)[i % 2].url}/photos/{path}") for i, (pid, path) in enumerate(good)] + [
            ("redirected", f"{b.url}/redirect/{good[0][1]}"),
            ("flaky", f"{a.url}/flaky/1/{good[1][1]}"),  # one 500, then the photo: a second try gets it
            ("second-photo", f'["{a.url}/status/404/first.jpg", "{b.url}/photos/{good[2][1]}"]'),
            ("on-disk", good[3][1]),  # a relative value under the folder root is still a file
            ("hung", f"{a.url}/hang/x.jpg"),
            ("missing", f"{a.url}/status/404/x.jpg"),
            ("failing", f"{b.url}/status/500/x.jpg"),
            ("throttled", f"{b.url}/status/429/x.jpg"),
            ("trickle", f"{a.url}/slow/ok.png"),
            ("login-page", f"{a.url}/html/x.jpg"),
            ("huge", f"{b.url}/huge/x.jpg"),
            ("loop", f"{a.url}/loop/0"),
            ("metadata", "http://169.254.169.254/latest/meta-data/x.jpg"),
            ("private", "http://10.1.2.3/x.jpg"),
            ("not-web", "ftp://127.0.0.1/x.jpg"),
        ]
        config = remote_catalogue(tmp_path, rows, write_config)
        result = CliRunner().invoke(app, ["extract-images", "-c", str(config)])
        assert result.exit_code == 0, result.output
        assert "10 embedded" in result.output
        assert failures(config) == {
            "hung": "timed out",
            "missing": "HTTP 404",
            "failing": "HTTP 500 after 3 tries",
            "throttled": "HTTP 429 after 3 tries",
            "trickle": "timed out",
            "login-page": "not an image",
            "huge": "too large",
            "loop": "too many redirects",
            "metadata": "address not allowed",
            "private": "address not allowed",
            "not-web": "outside images_root",
        }
        assert a.requests["/hang/x.jpg"] == 1  # a host that did not answer is not asked again
        assert b.requests["/status/500/x.jpg"] == 3 and a.requests["/status/404/x.jpg"] == 1
    cfg = load_config(config)
    on_disk = [decode_image(images_dir / path, 32) for _, path in good]
    expected = fake_embedding(np.stack([d.pixels for d in on_disk]), 1280)
    stored = read_back(cfg, [pid for pid, _ in good])  # the same features as the files on disk give
    np.testing.assert_allclose(stored.dense["image"], expected, **FLOAT16)
    np.testing.assert_allclose(stored.dense["image.colour"], np.stack([d.colour for d in on_disk]), **FLOAT16)
    fallbacks = read_back(cfg, ["redirected", "flaky", "second-photo", "on-disk"])
    np.testing.assert_allclose(fallbacks.dense["image"], expected[:4], **FLOAT16)


def test_reruns_ask_the_server_and_fetch_only_changed_photos(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    good = demo_rows(3)
    with photo_server(images_dir) as server:
        rows = [(pid, f"{server.url}/photos/{path}") for pid, path in good]
        rows.append(("late", f"{server.url}/photos/late.png"))
        config = remote_catalogue(tmp_path, rows, write_config)
        first = extract_images(load_config(config))
        assert (first.extracted, first.failures) == (3, {"HTTP 404": 1})
        assert sum(server.served.values()) == 3

        again = extract_images(load_config(config))  # nothing changed: one conditional request each, no body
        assert (again.extracted, again.skipped, again.checked, again.changed) == (0, 3, 3, 0)
        assert sum(server.served.values()) == 3 and server.requests["/photos/late.png"] == 2  # the failure is retried

        replaced = images_dir / good[0][1]  # the seller uploads a new photo under the same URL, and the missing one
        shutil.copy(images_dir / "ok.png", replaced)
        os.utime(replaced, (replaced.stat().st_atime + 100, replaced.stat().st_mtime + 100))
        shutil.copy(images_dir / "ok.png", images_dir / "late.png")
        changed = extract_images(load_config(config))
        assert (changed.extracted, changed.skipped, changed.checked, changed.changed) == (2, 2, 3, 1)
        assert "3 photo URLs embedded before checked for changes: 1 changed" in changed.describe()
        assert [server.served[path] for _, path in good[1:]] == [1, 1]  # the unchanged photos were sent once
    pixels, _ = decode_image(images_dir / "ok.png", 32)
    np.testing.assert_allclose(
        read_back(load_config(config), [good[0][0]]).dense["image"][0], fake_embedding(pixels[None], 1280)[0], **FLOAT16
    )


def test_photo_urls_need_remote_images_and_are_never_joined_as_local_paths(
    tmp_path: Path, images_dir: Path, write_config, fake_encoder
):
    with photo_server(images_dir) as server:
        config = catalogue(
            tmp_path,
            [("a", f"{server.url}/photos/ok.png")],
            write_config,
        )
        summary = extract_images(load_config(config, {"data.allow_absolute_image_paths": True}))
        assert summary.failures == {"photo URL (set data.remote_images: true)": 1} and not server.requests


def test_names_that_resolve_to_a_private_address_are_refused_before_any_request(images_dir: Path):
    settings = PhotoFetchConfig(**QUICK)
    with photo_server(images_dir) as server:
        port = server.server_address[1]
        with PhotoFetcher(settings) as fetcher:
            refused = fetcher.fetch([f"http://localhost:{port}/photos/ok.png"])
            literal = fetcher.fetch([f"http://[::1]:{port}/photos/ok.png", f"http://127.0.0.2:{port}/photos/ok.png"])
        assert (refused.reason, literal.reason) == ("address not allowed", "address not allowed")
        assert not server.requests
        with PhotoFetcher(settings, ["localhost"]) as fetcher:  # a listed name may resolve anywhere
            fetched = fetcher.fetch([f"http://localhost:{port}/photos/ok.png"])
            assert fetched.data == (images_dir / "ok.png").read_bytes()
        with PhotoFetcher(settings, ["127.0.0.0/8"]) as fetcher:  # and so may an address in a listed network
            redirected = fetcher.fetch([f"http://127.0.0.1:{port}/redirect/ok.png"])
            assert redirected.reason == "" and redirected.source.startswith(f"http://127.0.0.1:{port}/photos/ok.png|")


def test_an_image_value_may_name_several_photos():
    assert photo_candidates('["http://a/1.jpg", "http://b/2.jpg"]', None) == ["http://a/1.jpg", "http://b/2.jpg"]
    assert photo_candidates("a.jpg | b.jpg", "|") == ["a.jpg", "b.jpg"]
    assert photo_candidates("a,b.jpg", None) == ["a,b.jpg"]  # no separator: one value, commas and all
    assert photo_candidates(float("nan"), "|") == [] and photo_candidates("[]", None) == []
