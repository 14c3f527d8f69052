"""Where a command's work runs: in this process, or on a Dask cluster (dask.distributed) spanning many machines.

`connect(cfg.cluster)` yields None (work here), a client of a LocalCluster started on 127.0.0.1 for the command
("local"), or a client of the scheduler at an address (tcp://host:8786). Commands hand the cluster whole parts of
their work (`run_parts`, `score_rows`) or let joblib's loops inside the estimators run there (`joblib_on`); Dask
does the scheduling, retries and work stealing. Workers read photos and write the feature store themselves, so both
must lie on a file system every worker sees at the same path, or on object storage (fsspec URLs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgbm.errors import MmgbmError, first_line

if TYPE_CHECKING:
    from distributed import Client

# Long enough for a scheduler across a network, short enough that a wrong address is reported promptly.
CONNECT_TIMEOUT_S = 10
# Row parts per worker thread when scoring: a few, so a slow worker's share can be stolen by the others.
PARTS_PER_THREAD = 2


@contextmanager
def connect(address: str | None) -> Iterator[Client | None]:
    """A Dask client for the command's duration (None: no cluster); a LocalCluster it starts is stopped after."""
    if address is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if address == "local":
        # The dashboard on any free port of 127.0.0.1: a fixed one may be another cluster's.
        with LocalCluster(host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:  # refused, unknown host, nothing answering in time
        reason = first_line(exc) or type(exc).__name__
        raise MmgbmError(
            f"cannot reach the Dask scheduler at {address} ({reason}); start one with `dask scheduler` "
            f"or fix the address (setting `cluster` or --cluster)"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise MmgbmError(
                f"the Dask scheduler at {address} has no workers; start some with "
                f"`dask worker {address}` on machines that see the photos and the feature store"
            ) from None
        yield client


def run_parts(
    client: Client | None,
    fn: Callable[..., Any],
    parts: list[Any],
    on_done: Callable[[Any], None] = lambda result: None,
    **shared: Any,
) -> list[Any]:
    """`fn(part, **shared)` for every part, in this process or as one task per part on the cluster, where each
    shared value is sent to every worker once; results in the parts' order. `on_done` sees each result as its part
    finishes."""
    if client is None:
        results = [fn(part, **shared) for part in parts]
        for result in results:
            on_done(result)
        return results
    from distributed import KilledWorker, as_completed

    # Each value inside a list, so one that is itself a collection is sent whole, not item by item.
    sent = {name: client.scatter([value], broadcast=True, hash=False)[0] for name, value in shared.items()}
    futures = client.map(fn, client.scatter(parts, hash=False), pure=False, **sent)
    try:
        for future in as_completed(futures):
            on_done(future.result())
        return client.gather(futures)
    except KilledWorker as exc:
        raise MmgbmError(
            f"a Dask worker died running {getattr(fn, '__name__', fn)} ({exc}); it may have run out "
            f"of memory: see the workers' logs, give them more memory or fewer threads"
        ) from None


def score_rows(
    client: Client | None, fn: Callable[..., dict[str, np.ndarray]], products: Any, **shared: Any
) -> dict[str, np.ndarray]:
    """`fn(products, **shared)`, a dict of per-row columns; on a cluster computed over parts of the rows on the
    workers and put back together in row order, the same columns as computed here."""
    if client is None:
        return fn(products, **shared)
    threads = sum(client.nthreads().values())
    bounds = np.linspace(0, len(products), min(len(products), PARTS_PER_THREAD * max(threads, 1)) + 1).astype(int)
    results = run_parts(client, fn, [products[a:b] for a, b in zip(bounds[:-1], bounds[1:])], **shared)
    return {column: np.concatenate([result[column] for result in results]) for column in results[0]}


@contextmanager
def joblib_on(client: Client | None) -> Iterator[None]:
    """Inside, joblib's parallel loops (the estimators' folds) run as tasks on the cluster's workers."""
    if client is None:
        yield
        return
    from joblib import parallel_config

    with parallel_config(backend="dask", client=client):
        yield
