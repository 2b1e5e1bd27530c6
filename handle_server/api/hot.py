"""Hot answers: the most common request there is, an anonymous ``GET /api/handles/{handle}``
of a record in the cache, answered without routing, middlewares or the view.

The view keeps each such answer it gives (``HotAnswers.keep``) with the cache entry it was
made from, by the request's exact path. The same path again, asked the same way (a ``GET``
with no query and no ``Authorization``), is answered before the application's routing, with
the kept body and ETag, the same ``cached_response`` the view uses and the application's
``on_response_prepare`` hooks (by the kept request's match), while the entry stays
(``Lookup.dropped``, its TTL, the store caught up): byte for byte the view's answer, counted in
the cache's hits and in the request metrics as the view's are. Anything else, and a path
whose entry went, takes the application's own way, which keeps it again.

What the skipped middlewares do needs nothing here: the answer is made at once (it holds no
slot of ``ConcurrencyLimit``), it is a success (``error_middleware``), and the address
``TrustedProxies`` would put in is not used by it (the access log sees the request as it
came, on either way).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..cache import Answer, Lookup, ResolutionCache
from ..ops.metrics import Metrics
from ..responses import cached_response
from ..service import Resolution

__all__ = ["HotAnswers"]

#: Paths kept at most; at more, all are forgotten (the hot ones come back at their next ask).
_MOST = 10_000
#: The metrics' name of the route the view serves.
_ROUTE = "/api/handles/{handle}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class _Hot:
    cache: ResolutionCache
    lookup: Lookup
    answer: Answer
    match_info: web.UrlMappingMatchInfo


class HotAnswers:
    def __init__(self, metrics: Metrics, now: Callable[[], float]) -> None:
        self._metrics = metrics
        self._now = now  # the service's clock, for the caching headers
        self._kept: dict[str, _Hot] = {}
        self.answered = 0  # answers given here

    def keep(self, request: web.Request, resolution: Resolution, answer: Answer) -> None:
        """The view answered ``request`` with ``answer``, made from ``resolution``'s cache
        entry: keep it for the same request again."""
        if request.method != "GET" or request.query_string or "Authorization" in request.headers:
            return
        if resolution.entry is None or resolution.cache is None or resolution.entry.dropped:
            return  # (an entry out of the cache: a TTL of 0, a read a write overtook)
        if len(self._kept) >= _MOST:
            self._kept.clear()
        self._kept[request.raw_path] = _Hot(
            resolution.cache, resolution.entry, answer, request.match_info
        )

    def wrap(self, handle: Handler) -> Handler:
        """``handle`` (the application's own request handler), with kept answers first."""
        kept, metrics = self._kept, self._metrics

        async def hot_first(request: web.Request) -> web.StreamResponse:
            hot = kept.get(request.raw_path) if request.method == "GET" else None
            if hot is None or "Authorization" in request.headers:
                return await handle(request)
            started = time.perf_counter()
            cache, lookup = hot.cache, hot.lookup
            if lookup.dropped or cache.clock() >= lookup.expires or not cache.caught_up():
                del kept[request.raw_path]
                return await handle(request)
            cache.hit()
            self.answered += 1
            response = cached_response(
                request,
                hot.answer.body,
                etag=hot.answer.etag,
                content_type="application/json",
                expires=lookup.expires,
                now=self._now(),
            )
            # What the router found for the kept request (aiohttp's, private): the response's
            # preparation runs the application's on_response_prepare hooks by it.
            request._match_info = hot.match_info
            metrics.answered(_ROUTE, "GET", response.status, time.perf_counter() - started)
            return response

        return hot_first
