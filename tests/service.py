"""`mmgbm serve` in a child process on a free 127.0.0.1 port: what the service's tests and bench_serve.py talk to."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def service_process(
    config: Path, targets: list[str], overrides: list[str] = (), startup_s: float = 300, command: str = "serve", **popen
) -> Iterator[str]:
    """`mmgbm serve` (or `mmgbm review`: `command`) in a child process on a free 127.0.0.1 port while the block runs
    (tests, benchmarks): yields its base URL once /health answers, and stops it after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "mmgbm", command, "-c", str(config), "--port", str(port), *overrides]
    for target in targets:
        args += ["-t", target]
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(args, **popen)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"`{' '.join(args[1:])}` exited with status {process.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not answer within {startup_s:.0f}s") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
