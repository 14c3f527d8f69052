"""A photo host for tests and benchmarks: a threaded HTTP server on 127.0.0.1 serving a folder's files, with every
way a real CDN misbehaves on its own path, and optional latency on each answer.

    /photos/<name>          the file, with ETag and Last-Modified; 304 to a matching conditional request
    /redirect/<name>        302 to /photos/<name>
    /loop/<n>               302 to /loop/<n+1>, for ever
    /status/<code>/<name>   that status, always
    /flaky/<k>/<name>       500 for the first k requests of that path, then the file
    /hang/<name>            accepts, reads the request, never answers (until the server stops, at most 120 s)
    /slow/<name>            the file's headers, then one byte every 0.5 s
    /html/<name>            200 with an HTML page (a login wall or a soft 404)
    /huge/<name>            200 declaring a 10 GB body

Requests are counted per path (`served` counts the photo bodies sent), so a test can tell what was fetched.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HANG_LIMIT_S = 120


class PhotoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: a fetcher opens dozens of connections at once (the default is 5)

    def __init__(self, folder: Path, latency: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder, self.latency = Path(folder), latency
        self.requests: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer (a timed-out or refused fetch) is what these tests cause: no noise."""

    def count(self, counter: Counter[str], path: str) -> int:
        with self._lock:
            counter[path] += 1
            return counter[path]


class _Handler(BaseHTTPRequestHandler):
    server: PhotoServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 -- the name http.server calls
        seen = self.server.count(self.server.requests, self.path)
        if self.server.latency:
            time.sleep(self.server.latency)
        kind, _, rest = self.path.lstrip("/").partition("/")
        if kind == "photos":
            self._file(rest)
        elif kind == "redirect":
            self._answer(302, b"", Location=f"/photos/{rest}")
        elif kind == "loop":
            self._answer(302, b"", Location=f"/loop/{int(rest) + 1}")
        elif kind == "status":
            code, _, _ = rest.partition("/")
            self._answer(int(code), b"no")
        elif kind == "flaky":
            times, _, name = rest.partition("/")
            self._answer(500, b"busy") if seen <= int(times) else self._file(name)
        elif kind == "hang":
            self.server.stopping.wait(HANG_LIMIT_S)
        elif kind == "slow":
            body = (self.server.folder / rest).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(len(body)):
                if self.server.stopping.wait(0.5):
                    return
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
        elif kind == "html":
            page = b"<!doctype html><html><body>Please log in</body></html>"
            self._answer(200, page, **{"Content-Type": "text/html"})
        elif kind == "huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
        else:
            self._answer(404, b"not found")

    def _file(self, name: str) -> None:
        path = self.server.folder / name
        if not path.is_file():
            self._answer(404, b"not found")
            return
        info = path.stat()
        etag = f'"{hashlib.sha1(f"{info.st_mtime_ns}-{info.st_size}".encode()).hexdigest()[:16]}"'
        modified = formatdate(info.st_mtime, usegmt=True)
        if self.headers.get("If-None-Match") == etag or _not_modified_since(
            self.headers.get("If-Modified-Since"), info.st_mtime
        ):
            self._answer(304, b"", ETag=etag, **{"Last-Modified": modified})
            return
        self.server.count(self.server.served, name)
        self._answer(200, path.read_bytes(), ETag=etag, **{"Last-Modified": modified, "Content-Type": "image/jpeg"})

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


def _not_modified_since(header: str | None, mtime: float) -> bool:
    if not header:
        return False
    try:
        return int(mtime) <= parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return False


@contextmanager
def photo_server(folder: Path, latency: float = 0.0) -> Iterator[PhotoServer]:
    """A PhotoServer serving `folder` on a free 127.0.0.1 port while the block runs; every handler ends with it."""
    server = PhotoServer(folder, latency)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
