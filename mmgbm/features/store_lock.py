"""One extraction at a time per store folder: a lock file with a heartbeat, on a file system or on object storage.

Two `extract-images` runs at once on one store would both embed every product that neither had stored yet, so the
second is refused. Object storage has no exclusive create, so a claim is a file under the claimant's own name: it
writes it, then lists the folder, and withdraws it if it sees another live claim. Of two claims made at once at
least one sees the other (listings show every finished write, on S3, GCS and file systems alike), so at most one
run goes ahead; where both withdraw, each tries again after a random pause. The holder rewrites its file every
HEARTBEAT_S seconds; one not rewritten for STALE_S seconds is a killed run's, and is removed by the next claimant,
as is at once a claim of this machine (by host name) whose process is gone. Machines sharing a store are assumed to
agree on the time to within a few seconds.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmgbm.errors import MmgbmError
from mmgbm.features.folder import LocalFolder, ObjectFolder

PREFIX, SUFFIX = "writing-", ".lock"
HEARTBEAT_S = 10.0
STALE_S = 60.0
ATTEMPTS = 3
PAUSE_S = (0.1, 1.0)  # the random pause between attempts, long enough for a listing to see the other's claim


@contextmanager
def writing_lock(where: LocalFolder | ObjectFolder) -> Iterator[None]:
    """Hold the folder's lock for the duration, or raise MmgbmError naming the run that holds it."""
    name = f"{PREFIX}{time.time_ns()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
    claim = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for attempt in range(ATTEMPTS):
        _beat(where, name, claim)
        others = _live_claims(where, name)
        if not others:
            break
        where.delete(name)
        if attempt == ATTEMPTS - 1:
            holder, holder_claim = others[0]
            age = time.time() - holder_claim["beat"]
            raise MmgbmError(
                f"another extraction is writing {where} (host {holder_claim.get('host')}, pid "
                f"{holder_claim.get('pid')}, started {holder_claim.get('started')}, last seen {age:.0f} s ago); wait "
                f"for it to finish, or if it was killed, wait {max(STALE_S - age, 0):.0f} s or delete "
                f"{where.address(holder)}"
            )
        time.sleep(random.uniform(*PAUSE_S))
    stop = threading.Event()
    heart = threading.Thread(
        target=_heartbeat, args=(where, name, claim, stop), daemon=True, name="mmgbm-lock-heartbeat"
    )
    heart.start()
    try:
        yield
    finally:
        stop.set()
        heart.join()
        where.delete(name)


def _beat(where: LocalFolder | ObjectFolder, name: str, claim: dict[str, Any]) -> None:
    text = json.dumps({**claim, "beat": time.time()})
    where.write(name, lambda tmp: Path(tmp).write_text(text))


def _heartbeat(where: LocalFolder | ObjectFolder, name: str, claim: dict[str, Any], stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            _beat(where, name, claim)
        except MmgbmError:  # the store is out of reach for now: the next beat tries again
            pass


def _gone(claim: dict[str, Any]) -> bool:
    """Whether the claim is this machine's and its process has ended (killed, where it could not let go)."""
    if os.name != "posix" or claim.get("host") != socket.gethostname():  # (Windows' os.kill would signal it)
        return False
    try:
        os.kill(int(claim["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):  # alive under another user, or not a pid: assume alive
        return False
    return False


def _live_claims(where: LocalFolder | ObjectFolder, own: str) -> list[tuple[str, dict[str, Any]]]:
    """Other claims whose holder beat within STALE_S seconds, oldest first; stale ones are removed."""
    live = []
    for name in sorted(n for n in where.names() if n.startswith(PREFIX) and n.endswith(SUFFIX) and n != own):
        try:
            claim = json.loads(where.read_text(name))
            beat = float(claim["beat"])
        except FileNotFoundError:  # released since the listing
            continue
        except (ValueError, KeyError, TypeError):  # not a claim this module wrote: nobody holds it
            beat = 0.0
        if time.time() - beat < STALE_S and not _gone(claim):
            live.append((name, claim))
        else:
            where.delete(name)
    return live
