"""Where a catalogue's photos are and how each may be read: a folder, object storage, or http(s) URLs.

A catalogue's image value names one photo or several (a JSON list, or values split on `data.image_separator`).
Each is resolved once, here: a relative value under `images_root`, a value that is an http(s) URL kept as that URL
(never joined as a local path), fetched by mmgbm.features.photo_fetch when `data.remote_images` allows it or when
it lies under an http(s) root. Of several photos the first usable one is embedded: for a file the first that exists,
for URLs the first that answers with an image. The first is the main photo in Merchant Center feeds (`image_link`)
and marketplace exports; the others are other angles and close-ups, whose mean would blur the photo's colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pandas as pd

from mmgbm.features import photo_urls
from mmgbm.features.image_decoding import UnreadableImage, check_image_file, image_sources
from mmgbm.features.photo_fetch import PhotoFetcher, photo_candidates
from mmgbm.urls import is_url, is_web_url

if TYPE_CHECKING:
    from mmgbm.config import DataConfig, PhotoFetchConfig

REMOTE_OFF = "photo URL (set data.remote_images: true)"


@dataclass(frozen=True)
class Photos:
    root: Path | str  # the folder or URL relative values resolve against
    inside: Path | str | None  # where every photo that is not a fetched URL must lie; None: anywhere
    remote: bool  # http(s) URL values are fetched wherever they point (data.remote_images)
    separator: str | None
    fetch_settings: PhotoFetchConfig
    allowed_hosts: tuple[str, ...]

    @classmethod
    def of(cls, data: DataConfig) -> Photos:
        """The photos of a catalogue as its `data` section declares them."""
        # Without an explicit images_root, image paths are relative to the training table: they usually sit beside it.
        root = data.images_root or data.splits["train"].parent
        hosts = tuple(data.remote_image_hosts)
        if is_web_url(str(root)):  # the config's own photo host is trusted, whatever address it has
            hosts += (urlsplit(str(root)).hostname or "",)
        return cls(
            root,
            None if data.allow_absolute_image_paths else root,
            data.remote_images,
            data.image_separator,
            data.fetch,
            hosts,
        )

    def candidates(self, value: object) -> list[str]:
        """Every photo a catalogue value names, each resolved: URLs stay URLs, relative values join the root."""
        out = []
        for text in photo_candidates(value, self.separator):
            if is_url(text):
                out.append(photo_urls.join(str(self.root), text) if is_url(self.root) else text)
            elif is_url(self.root):
                out.append(photo_urls.join(str(self.root), text))
            else:
                out.append(str(Path(self.root) / text))  # an absolute value replaces the root
        return out

    def paths(self, column: pd.Series) -> list[str]:
        """Per product, the photo to embed ('' for none): of several, the first file that can be opened, or the
        first URL (the fetch falls back to the next ones, `candidate_lists`)."""
        return [self.chosen(c) for c in self.candidate_lists(column)]

    def locate(self, column: pd.Series) -> tuple[list[str], list[list[str] | None], list[str | None]]:
        """Per product: the photo to embed (`paths`), the photos to fetch in turn where it is a URL (else None), and
        what a file or object is now (`image_sources`; None for URLs, whose servers are asked when extracting)."""
        candidates = self.candidate_lists(column)
        paths = [self.chosen(c) for c in candidates]
        urls = [c if self.fetched(p) else None for p, c in zip(paths, candidates)]
        sources = image_sources([p if u is None else "" for p, u in zip(paths, urls)], self.root, self.inside)
        return paths, urls, sources

    def candidate_lists(self, column: pd.Series) -> list[list[str]]:
        return [self.candidates(value) for value in column.tolist()]

    def chosen(self, candidates: list[str]) -> str:
        if not candidates:
            return ""
        if len(candidates) > 1 and not self.fetched(candidates[0]):
            for path in candidates:
                try:
                    self.check(path)
                    return path
                except UnreadableImage:
                    pass
        return candidates[0]

    def fetched(self, path: str) -> bool:
        """Whether `path` is an http(s) URL that the fetcher reads (the others are files or fsspec objects)."""
        return is_web_url(path) and (self.remote or photo_urls.inside(path, str(self.root)))

    def check(self, path: str) -> None:
        """UnreadableImage where `path` may not be read; fetched URLs are checked by the fetcher, request by request."""
        if self.fetched(path):
            return
        if is_web_url(path):
            raise UnreadableImage(REMOTE_OFF, path)
        check_image_file(path, self.inside)

    def fetcher(self) -> PhotoFetcher:
        return PhotoFetcher(self.fetch_settings, self.allowed_hosts)
