"""Prometheus metrics (``GET /metrics``) and health checks (``/healthz``, ``/readyz``).

What is measured:
- ``handle_server_requests_total{route, method, status}`` and
  ``handle_server_request_duration_seconds{route, method}``: every answer, by the route that
  matched (``/api/handles/{handle}``, not the handle: the label set stays small);
- ``handle_server_cache_lookups_total{result}``: resolution cache hits and misses, and the store
  reads and invalidations behind them;
- ``handle_server_store_duration_seconds{operation}``: each call into the store;
- ``handle_server_handles{prefix}``: handles stored under each homed prefix, read from the store
  when ``/metrics`` is scraped.

Under ``serve --workers N`` each worker writes its figures to files in the folder named by
``PROMETHEUS_MULTIPROC_DIR`` (the parent makes one), and ``/metrics``, whichever worker
answers, reports the sum over all of them: prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
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
    Handle,
    HandleStore,
    ImportResult,
    SessionRecord,
    StoreUnavailable,
)

from . import keys
from .responses import json_response

__all__ = ["Metrics", "MetricsStore", "healthz", "metrics", "metrics_middleware", "readyz"]

T = TypeVar("T")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_READY_TIMEOUT = 2.0


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
        self.handles = Gauge(
            "handle_server_handles",
            "Handles stored under each homed prefix (read when /metrics is scraped)",
            ["prefix"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        for result in ("hit", "miss", "load", "invalidation"):
            self.cache.labels(result)  # every result shows, at 0 until it happens

    def cache_event(self, result: str) -> None:
        self.cache.labels(result).inc()

    def render(self) -> bytes:
        """The text exposition format: this process's figures, or every worker's summed."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def route_of(request: web.Request) -> str:
    """The route template a request matched, or ``unmatched``."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics_ = request.app[keys.METRICS]
        route = route_of(request)
        metrics_.requests.labels(route, request.method, str(status)).inc()
        metrics_.latency.labels(route, request.method).observe(time.perf_counter() - started)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics"""
    service = request.app[keys.SERVICE]
    registry = request.app[keys.METRICS]
    for prefix in service.config.handle.prefixes:
        registry.handles.labels(prefix).set(await service.store.count_handles(prefix))
    body = await asyncio.to_thread(registry.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is up and answering."""
    return json_response(request, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: the store answers (a read, within 2 s); 503 while it does not."""
    service = request.app[keys.SERVICE]
    prefix = service.config.handle.prefixes[0] if service.config.handle.prefixes else "0.NA"
    try:
        await asyncio.wait_for(service.store.count_handles(prefix), _READY_TIMEOUT)
    except (StoreUnavailable, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {_READY_TIMEOUT:g} s"
        return json_response(request, {"status": "unavailable", "store": reason}, status=503)
    return json_response(request, {"status": "ok"})


class MetricsStore(HandleStore):
    """A store that times every call into ``inner`` (``handle_server_store_duration_seconds``)
    and otherwise is ``inner``."""

    def __init__(self, inner: HandleStore, metrics: Metrics) -> None:
        self.inner = inner
        self._histogram = metrics.store

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        finally:
            self._histogram.labels(operation).observe(time.perf_counter() - started)

    async def get(self, handle: str) -> Handle | None:
        return await self._timed("get", self.inner.get(handle))

    async def update(self, handle: str, change: Change) -> tuple[Handle | None, Handle | None]:
        return await self._timed("update", self.inner.update(handle, change))

    async def count_handles(self, prefix: str) -> int:
        return await self._timed("count_handles", self.inner.count_handles(prefix))

    def iter_handles(
        self, prefix: str, *, offset: int = 0, limit: int | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[str]]:
        return self.inner.iter_handles(prefix, offset=offset, limit=limit, batch=batch)

    def iter_records(self, *, after: str = "", batch: int = 1000) -> AsyncIterator[list[Handle]]:
        return self.inner.iter_records(after=after, batch=batch)

    async def import_records(
        self, records: Sequence[Handle], *, replace: bool = False
    ) -> ImportResult:
        return await self._timed("import", self.inner.import_records(records, replace=replace))

    async def watch(self, listener: ChangeListener) -> bool:
        return await self.inner.watch(listener)

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
    ) -> list[str]:
        return await self._timed(
            "search",
            self.inner.search(
                conditions, prefix=prefix, readable=readable, offset=offset, limit=limit
            ),
        )

    async def get_session(self, key: bytes, *, now: float) -> SessionRecord | None:
        return await self._timed("get_session", self.inner.get_session(key, now=now))

    async def put_session(self, session: SessionRecord, *, now: float, limit: int) -> bool:
        return await self._timed(
            "put_session", self.inner.put_session(session, now=now, limit=limit)
        )

    async def renew_session(self, key: bytes, *, expires: float) -> None:
        await self._timed("renew_session", self.inner.renew_session(key, expires=expires))

    async def failures(self, keys_: Sequence[str], *, since: float) -> dict[str, Any]:
        return await self._timed("failures", self.inner.failures(keys_, since=since))

    async def add_failure(self, keys_: Sequence[str], *, now: float, since: float) -> None:
        await self._timed("add_failure", self.inner.add_failure(keys_, now=now, since=since))

    async def shared_secret(self, name: str, candidate: bytes) -> bytes:
        return await self._timed("shared_secret", self.inner.shared_secret(name, candidate))

    async def close(self) -> None:
        """The store belongs to whoever opened it: closing this view closes nothing."""
