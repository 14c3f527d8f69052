"""Photos by http(s) URL, as product feeds name them: many requests in flight, none waited on for long.

A feed is untrusted input and the service takes photos from strangers, so a URL may name any address. Only http
and https are fetched, and a host that resolves to a loopback, private, link-local, metadata or otherwise non-public
address is refused unless the config lists it (`data.remote_image_hosts`). The check runs on the addresses the
connection is made to (a resolver of aiohttp's connector), on every redirect hop, so neither a DNS answer nor a
redirect can lead past it.

One event loop in a background thread runs every request (asyncio: thousands of waiting sockets cost one thread,
not thousands); callers stay synchronous and take results as they complete, so a hung host holds only its own
products. Each try is bounded (connect, between bytes, whole), refusals that may pass (429, 5xx, a dropped
connection) are tried again with backoff, bodies are capped before they are read, and every way a URL can fail ends
as one short reason, the same word for the same cause, for `failures.csv`.

A photo's source is its URL with the validators the server sent (ETag, Last-Modified, size): a re-run asks the
server, in one conditional request, whether it changed, without downloading it again.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from PIL import Image, UnidentifiedImageError

from mmgbm.features.image_decoding import EMPTY, NO_PATH, NOT_AN_IMAGE, TOO_LARGE
from mmgbm.urls import WEB_SCHEMES

if TYPE_CHECKING:
    import aiohttp

    from mmgbm.config import PhotoFetchConfig

TIMED_OUT = "timed out"
NOT_ALLOWED = "address not allowed"
TOO_MANY_REDIRECTS = "too many redirects"
UNREACHABLE = "connection failed"
BAD_URL = "invalid URL"


def photo_candidates(value: Any, separator: str | None) -> list[str]:
    """A catalogue's image value as the photos it names, in order: a JSON list (Flipkart's `["http://a", ...]`), or
    values split on `separator`; empty where there is none."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(v).strip() for v in parsed if str(v).strip()]
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class Fetched:
    """What fetching one product's photo gave: its bytes and source, or the reason there are none."""

    key: Any
    url: str = ""
    data: bytes = b""
    source: str | None = None  # "url|size|etag|last-modified"
    reason: str = ""


class FetchFailed(Exception):
    def __init__(self, reason: str, retry: bool = False):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


class _Refused(OSError):
    """Raised by the resolver for an address the policy refuses; aiohttp hands it back as the cause."""


class HostPolicy:
    """Which hosts photo URLs may reach: public addresses, plus the hosts, addresses and networks listed."""

    def __init__(self, allowed: Iterable[str] = ()):
        self.names, self.networks = set(), []
        for entry in allowed:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.names.add(entry.lower().rstrip("."))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.networks):
            return True
        return ip.is_global and not ip.is_multicast


def source_of(url: str, size: int | str, etag: str, modified: str) -> str:
    return f"{url}|{size}|{etag}|{modified}"


def source_url(source: str | None) -> str | None:
    return source.rsplit("|", 3)[0] if source and source.count("|") >= 3 else None


class PhotoFetcher:
    """Fetches photo URLs on one background event loop; close() (or `with`) stops it."""

    def __init__(self, settings: PhotoFetchConfig, allowed_hosts: Iterable[str] = ()):
        self.settings, self.policy = settings, HostPolicy(allowed_hosts)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mmgbm-fetch", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession = self._call(self._open())

    def __enter__(self) -> PhotoFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._session.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def fetch(self, candidates: list[str], key: Any = None) -> Fetched:
        """The first of `candidates` that is an image, fetched; or the first one's failure."""
        return self._call(self._first_image(key, candidates))

    def fetch_all(self, jobs: list[tuple[Any, list[str]]]) -> FetchStream:
        """`fetch` of every (key, candidates), at most `in_flight` at a time, taken as each completes."""
        return FetchStream(self, [lambda k=key, u=urls: self._first_image(k, u) for key, urls in jobs])

    def changed(self, sources: list[tuple[Any, str]]) -> Iterator[tuple[Any, bool]]:
        """(key, whether the photo changed) for each (key, stored source), one conditional request each; a photo
        that cannot be asked about counts as changed, so extraction fetches it and lists why it failed."""
        return iter(FetchStream(self, [lambda k=key, s=source: self._changed(k, s) for key, source in sources]))

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        s = self.settings
        connector = aiohttp.TCPConnector(
            limit=s.in_flight, limit_per_host=s.per_host, resolver=_PolicyResolver(self.policy)
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout, sock_read=s.read_timeout)
        return aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=True, headers={"User-Agent": "mmgbm photo fetcher"}
        )

    async def _first_image(self, key: Any, candidates: list[str]) -> Fetched:
        first: Fetched | None = None
        for url in candidates:
            try:
                data, source = await self._get(url)
                _check_image(data)
                return Fetched(key, url, data, source)
            except FetchFailed as exc:
                first = first or Fetched(key, url, reason=exc.reason)
        return first or Fetched(key, reason=NO_PATH)

    async def _changed(self, key: Any, source: str) -> tuple[Any, bool]:
        url, size, etag, modified = source.rsplit("|", 3)
        headers = {k: v for k, v in (("If-None-Match", etag), ("If-Modified-Since", modified)) if v}
        try:
            now = await self._get(url, headers, body=False)
        except FetchFailed:
            return key, True
        return key, now is not None and now[1] != source

    async def _get(
        self, url: str, headers: dict[str, str] | None = None, body: bool = True
    ) -> tuple[bytes, str] | None:
        """(bytes, source) of `url`, tried up to `tries` times; None for 304 Not Modified (a conditional request).
        With body=False the body is not read: the source alone, from the headers."""
        s = self.settings
        for attempt in range(s.tries):
            try:
                return await asyncio.wait_for(self._follow(url, headers or {}, body), s.total_timeout)
            except asyncio.TimeoutError:
                # A host that did not answer in time is not asked again: its products would wait that long twice.
                raise FetchFailed(TIMED_OUT) from None
            except FetchFailed as exc:
                if not exc.retry:
                    raise
                if attempt + 1 == s.tries:
                    raise FetchFailed(f"{exc.reason} after {s.tries} tries") from None
                await asyncio.sleep(s.backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def _follow(self, url: str, headers: dict[str, str], body: bool) -> tuple[bytes, str] | None:
        import aiohttp

        for _ in range(self.settings.max_redirects + 1):
            self._check_url(url)
            try:
                async with self._session.get(url, headers=headers, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    return await self._body(url, response, body)
            except FetchFailed:
                raise
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _Refused):
                    raise FetchFailed(NOT_ALLOWED) from None
                raise FetchFailed(UNREACHABLE, retry=True) from None
            except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
                raise FetchFailed(TIMED_OUT) from None
            except (aiohttp.ClientError, OSError):  # dropped connection, broken response: may pass on a new try
                raise FetchFailed(UNREACHABLE, retry=True) from None
        raise FetchFailed(TOO_MANY_REDIRECTS)

    async def _body(self, url: str, response: aiohttp.ClientResponse, body: bool) -> tuple[bytes, str] | None:
        if response.status == 304:
            return None
        if response.status == 429 or response.status >= 500:
            raise FetchFailed(f"HTTP {response.status}", retry=True)
        if response.status >= 300:
            raise FetchFailed(f"HTTP {response.status}")
        limit, declared = self.settings.max_bytes, response.content_length
        if declared is not None and declared > limit:
            raise FetchFailed(TOO_LARGE)
        etag, modified = response.headers.get("ETag", ""), response.headers.get("Last-Modified", "")
        if not body:
            return b"", source_of(url, declared if declared is not None else "", etag, modified)
        data = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > limit:
                raise FetchFailed(TOO_LARGE)
        return bytes(data), source_of(url, len(data), etag, modified)

    def _check_url(self, url: str) -> None:
        """Refuse, before any request, what the resolver never sees: other schemes and literal addresses."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 -- a port that is not a number raises here
        except ValueError:
            raise FetchFailed(BAD_URL) from None
        if parts.scheme.lower() not in WEB_SCHEMES or not host:
            raise FetchFailed(BAD_URL)
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not (self.policy.allows_name(host) or self.policy.allows_address(host)):
            raise FetchFailed(NOT_ALLOWED)


class FetchStream:
    """Results of many requests, each taken as it completes. A feeder thread keeps `in_flight` requests running; a
    result not yet taken counts among them, so at most that many photos are held in memory, however long the list."""

    def __init__(self, fetcher: PhotoFetcher, coroutines: list[Callable[[], Any]]):
        self._results: queue.Queue = queue.Queue()
        self._window = threading.Semaphore(fetcher.settings.in_flight)
        self._left, self._closed = len(coroutines), False
        self._feeder = threading.Thread(target=self._feed, args=(fetcher, coroutines), daemon=True)
        self._feeder.start()

    def _feed(self, fetcher: PhotoFetcher, coroutines: list[Callable[[], Any]]) -> None:
        for make in coroutines:
            self._window.acquire()
            if self._closed:
                return
            future = asyncio.run_coroutine_threadsafe(make(), fetcher._loop)
            future.add_done_callback(lambda f: self._results.put(f.exception() or f.result()))

    @property
    def done(self) -> bool:
        return self._left == 0

    def get(self, block: bool = True) -> Any:
        """The next completed result; None when none is ready (block=False) or all were taken."""
        if self._left == 0:
            return None
        try:
            item = self._results.get(block=block)
        except queue.Empty:
            return None
        self._left -= 1
        self._window.release()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop starting requests (the caller gave up on the rest)."""
        self._closed = True
        self._window.release()

    def __iter__(self) -> Iterator[Any]:
        while not self.done:
            yield self.get()


class _PolicyResolver:
    """aiohttp's threaded resolver, refusing names that resolve to an address the policy does not allow."""

    def __init__(self, policy: HostPolicy):
        from aiohttp.resolver import ThreadedResolver

        self.policy, self._inner = policy, ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        hosts = await self._inner.resolve(host, port, family)
        if not self.policy.allows_name(host) and not all(self.policy.allows_address(h["host"]) for h in hosts):
            raise _Refused(f"{host} resolves to an address that is not public")
        return hosts

    async def close(self) -> None:
        await self._inner.close()


def _check_image(data: bytes) -> None:
    """Refuse, from the header alone, a body that is no image (an HTML error page served as 200)."""
    if not data:
        raise FetchFailed(EMPTY)
    try:
        with Image.open(io.BytesIO(data)):
            pass
    except Image.DecompressionBombError:
        pass  # an image: the decode refuses or scales it, as it does a file
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise FetchFailed(NOT_AN_IMAGE) from None
