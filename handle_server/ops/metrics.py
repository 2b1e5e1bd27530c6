"""Prometheus metrics: what is counted and how (``views.py`` here serves them at ``/metrics``).

What is measured:
- ``handle_server_requests_total{route, method, status}`` and
  ``handle_server_request_duration_seconds{route, method}``: every answer, by the route that
  matched (``/api/handles/{handle}``, not the handle: the label set stays small);
- ``handle_server_cache_lookups_total{result}``: resolution cache hits and misses, and the store
  reads and invalidations behind them;
- ``handle_server_store_duration_seconds{operation}``: each call into the store;
- ``handle_server_handles{prefix}``: handles stored under each homed prefix, read from the store
  when ``/metrics`` is scraped; only with ``[metrics] per_prefix_counts = true``, since the
  listing API tells those counts only to identities holding LIST_HANDLES.

Under ``serve --workers N`` each worker writes its figures to files in the folder named by
``PROMETHEUS_MULTIPROC_DIR`` (the parent makes one), and ``/metrics``, whichever worker
answers, reports the sum over all of them: prometheus-client's multiprocess mode. Counts are
added to the figures in batches (``Metrics.fold``): the answering worker's at the scrape, the
others' within a second of their answers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from storage import (
    Change,
    ChangeListener,
    Exported,
    Handle,
    HandleStore,
    ImportResult,
    Outcome,
    SessionRecord,
    Version,
)

__all__ = ["MULTIPROCESS_DIR", "Metrics", "MetricsStore", "multiprocess_mode"]

T = TypeVar("T")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: The operation codes of RFC 3652 and the reference (AbstractMessage.OC_*).
_NATIVE_OPS = frozenset(
    {1, 2, 100, 101, 102, 103, 104, 105, 200, 201, 300, 301, 302, 400, 401, 402, 403, 404}
)
#: Servers of other sites with a label of their own on /metrics.
_UPSTREAM_SERVERS = 100
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


#: Seconds a count may wait to be added to its metric (``Metrics.fold``).
_FOLD_AFTER = 1.0


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


class Metrics:
    """The metrics of one application, in a registry of its own (two apps in one process, as
    in the tests, do not mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "handle_server_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "handle_server_request_duration_seconds",
            "Time from a request's arrival to its answer, by route and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "handle_server_cache_lookups",
            "Resolution cache events: hit, miss, load (a store read) and invalidation",
            ["result"],
            registry=r,
        )
        self.store = Histogram(
            "handle_server_store_duration_seconds",
            "Time of each call into the store, by operation",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.native = Counter(
            "handle_server_native_requests",
            "Native protocol (RFC 3652) requests answered, by operation code and response code",
            ["op", "rc"],
            registry=r,
        )
        self.remote_cache = Counter(
            "handle_server_remote_cache_lookups",
            "Global mode: cache events for records homed elsewhere (hit, miss, load: an "
            "upstream request, invalidation)",
            ["result"],
            registry=r,
        )
        self.upstream = Histogram(
            "handle_server_upstream_duration_seconds",
            "Global mode: time of each request to another site's server, by server and outcome "
            "(answered, failed: no answer in time or only errors)",
            ["server", "outcome"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.handles = Gauge(
            "handle_server_handles",
            "Handles stored under each homed prefix (read when /metrics is scraped)",
            ["prefix"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        # Children bound to their labels once: ``labels()`` on every request costs more than
        # the counting itself. Every cache result shows, at 0 until it happens.
        self._cache_events = {
            result: self.cache.labels(result) for result in ("hit", "miss", "load", "invalidation")
        }
        self._remote_events = {
            result: self.remote_cache.labels(result)
            for result in ("hit", "miss", "load", "invalidation")
        }
        self._upstream_servers: set[str] = set()
        self._answered: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}
        self._native: dict[tuple[int, int], Any] = {}
        # Counts and observations not yet added to their children (``fold``).
        self._counts: dict[Any, int] = {}
        self._observed: dict[Any, list[float]] = {}
        self._folding: asyncio.TimerHandle | None = None

    # -- deferred counting -------------------------------------------------------------------
    #
    # A request's counts are kept in plain dicts and added to the prometheus children at most
    # ``_FOLD_AFTER`` later, in one go: an ``inc`` takes a lock and checks its argument each
    # time, several times what the request's own counting needs. ``render`` adds them first,
    # so a scrape sees every answer this process gave; other workers' (multiprocess mode) are
    # at most ``_FOLD_AFTER`` late.

    def _count(self, child: Any) -> None:
        counts = self._counts
        if not counts and not self._observed:
            self._fold_soon()
        counts[child] = counts.get(child, 0) + 1

    def observe(self, child: Any, value: float) -> None:
        observed = self._observed.get(child)
        if observed is None:
            if not self._counts and not self._observed:
                self._fold_soon()
            observed = self._observed[child] = []
        observed.append(value)

    def _fold_soon(self) -> None:
        if self._folding is not None:
            return
        try:
            self._folding = asyncio.get_running_loop().call_later(_FOLD_AFTER, self.fold)
        except RuntimeError:  # no loop: nothing would fold them later
            self._folding = None

    def fold(self) -> None:
        """Add what was counted meanwhile to the metrics."""
        if self._folding is not None:
            self._folding.cancel()
            self._folding = None
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for child, n in counts.items():
            child.inc(n)
        for child, values in observed.items():
            for value in values:
                child.observe(value)

    # -- what is counted ---------------------------------------------------------------------

    def cache_event(self, result: str) -> None:
        self._count(self._cache_events[result])

    def remote_cache_event(self, result: str) -> None:
        self._count(self._remote_events[result])

    def upstream_request(self, server: str, outcome: str, seconds: float) -> None:
        """Time one request to another site's server. At most ``_UPSTREAM_SERVERS`` servers
        get a label of their own (the sites a prefix names are anybody's choice); the rest
        count as ``other``."""
        if server not in self._upstream_servers:
            if len(self._upstream_servers) >= _UPSTREAM_SERVERS:
                server = "other"
            else:
                self._upstream_servers.add(server)
        self.upstream.labels(server, outcome).observe(seconds)

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answer and its latency. A method outside HTTP's usual ones counts as
        ``other``: a client must not be able to grow the label set without end."""
        if method not in _METHODS:
            method = "other"
        counter = self._answered.get((route, method, status))
        if counter is None:
            counter = self.requests.labels(route, method, str(status))
            self._answered[route, method, status] = counter
        self._count(counter)
        latency = self._latencies.get((route, method))
        if latency is None:
            latency = self._latencies[route, method] = self.latency.labels(route, method)
        self.observe(latency, seconds)

    def native_answered(self, op_code: int, response_code: int) -> None:
        """Count one native answer. Operation codes the protocol does not define count as
        ``other``, so that no client can grow the label set."""
        counter = self._native.get((op_code, response_code))
        if counter is None:
            op = str(op_code) if op_code in _NATIVE_OPS else "other"
            counter = self.native.labels(op, str(response_code))
            if len(self._native) < 1024:  # response codes are the client's to invent
                self._native[op_code, response_code] = counter
        self._count(counter)

    def render(self) -> bytes:
        """The text exposition format: this process's figures, or every worker's summed."""
        self.fold()
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsStore(HandleStore):
    """A store that times every call into ``inner`` (``handle_server_store_duration_seconds``)
    and otherwise is ``inner``."""

    def __init__(self, inner: HandleStore, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics
        self._children: dict[str, Any] = {}
        self.caught_up = inner.caught_up  # type: ignore[method-assign]

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            child = self._children.get(operation)
            if child is None:
                child = self._children[operation] = self._metrics.store.labels(operation)
            self._metrics.observe(child, time.perf_counter() - started)

    async def get(self, handle: str) -> Handle | None:
        return await self._timed("get", self.inner.get(handle))

    async def update(
        self, handle: str, change: Change, *, by: str | None = None
    ) -> tuple[Handle | None, Handle | None]:
        return await self._timed("update", self.inner.update(handle, change, by=by))

    async def get_many(self, handles: Sequence[str]) -> dict[str, Handle | None]:
        return await self._timed("get_many", self.inner.get_many(handles))

    async def update_many(
        self, changes: Sequence[tuple[str, Change]], *, atomic: bool, by: str | None = None
    ) -> list[Outcome | Exception]:
        return await self._timed(
            "update_many", self.inner.update_many(changes, atomic=atomic, by=by)
        )

    async def history(
        self, handle: str, *, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Version]]:
        return await self._timed("history", self.inner.history(handle, offset=offset, limit=limit))

    async def version(self, handle: str, number: int) -> Version | None:
        return await self._timed("version", self.inner.version(handle, number))

    async def count_handles(self, prefix: str) -> int:
        return await self._timed("count_handles", self.inner.count_handles(prefix))

    def iter_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[str]]:
        return self.inner.iter_handles(prefix, offset=offset, limit=limit, batch=batch)

    def iter_records(self, *, after: str = "", batch: int = 1000) -> AsyncIterator[list[Handle]]:
        return self.inner.iter_records(after=after, batch=batch)

    def iter_exported(self, *, after: str = "", batch: int = 1000) -> AsyncIterator[list[Exported]]:
        return self.inner.iter_exported(after=after, batch=batch)

    async def import_records(
        self, records: Sequence[Handle | Exported], *, replace: bool = False
    ) -> ImportResult:
        return await self._timed("import", self.inner.import_records(records, replace=replace))

    async def prune_history(
        self, *, keep_versions: int | None = None, before: float | None = None
    ) -> int:
        return await self._timed(
            "prune_history", self.inner.prune_history(keep_versions=keep_versions, before=before)
        )

    async def watch(self, listener: ChangeListener) -> bool:
        return await self.inner.watch(listener)

    async def announce(self, keys: Sequence[str | None]) -> None:
        await self.inner.announce(keys)

    def caught_up(self) -> bool:  # (bound to the inner store's in ``__init__``: asked often)
        return self.inner.caught_up()

    async def catch_up(self) -> None:
        await self.inner.catch_up()

    async def search(
        self,
        conditions: Sequence[tuple[str, str]],
        *,
        prefix: str | None = None,
        readable: Collection[str] = (),
        offset: int = 0,
        limit: int = 1000,
        time_limit: float | None = None,
    ) -> list[str]:
        return await self._timed(
            "search",
            self.inner.search(
                conditions,
                prefix=prefix,
                readable=readable,
                offset=offset,
                limit=limit,
                time_limit=time_limit,
            ),
        )

    async def get_session(self, key: bytes, *, now: float) -> SessionRecord | None:
        return await self._timed("get_session", self.inner.get_session(key, now=now))

    async def put_session(
        self,
        session: SessionRecord,
        *,
        now: float,
        limit: int,
        per_identity: int | None = None,
    ) -> bool:
        return await self._timed(
            "put_session",
            self.inner.put_session(session, now=now, limit=limit, per_identity=per_identity),
        )

    async def renew_session(self, key: bytes, *, expires: float) -> None:
        await self._timed("renew_session", self.inner.renew_session(key, expires=expires))

    async def failures(self, keys_: Sequence[str], *, since: float) -> dict[str, Any]:
        return await self._timed("failures", self.inner.failures(keys_, since=since))

    async def add_failure(self, keys_: Sequence[str], *, now: float, since: float) -> None:
        await self._timed("add_failure", self.inner.add_failure(keys_, now=now, since=since))

    async def shared_secret(self, name: str, candidate: bytes) -> bytes:
        return await self._timed("shared_secret", self.inner.shared_secret(name, candidate))

    async def put_ticket(
        self, key: bytes, data: bytes, *, expires: float, now: float, limit: int
    ) -> None:
        call = self.inner.put_ticket(key, data, expires=expires, now=now, limit=limit)
        await self._timed("put_ticket", call)

    async def get_ticket(self, key: bytes, *, now: float) -> bytes | None:
        return await self._timed("get_ticket", self.inner.get_ticket(key, now=now))

    async def take_ticket(self, key: bytes, *, now: float) -> bytes | None:
        return await self._timed("take_ticket", self.inner.take_ticket(key, now=now))

    async def close(self) -> None:
        """The store belongs to whoever opened it: closing this view closes nothing."""
