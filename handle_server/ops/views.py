"""Operator endpoints: ``GET /metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz``
(readiness), and the middleware that counts every request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from storage import StoreUnavailable

from .. import keys
from ..responses import json_response

__all__ = [
    "healthz",
    "metrics",
    "metrics_middleware",
    "readyz",
    "route_of",
]

_READY_TIMEOUT = 2.0


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
        request.app[keys.METRICS].answered(
            route_of(request), request.method, status, time.perf_counter() - started
        )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics"""
    service = request.app[keys.SERVICE]
    registry = request.app[keys.METRICS]
    if service.config.metrics.per_prefix_counts:  # opt-in: listing needs LIST_HANDLES
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
