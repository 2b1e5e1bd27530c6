"""Hot answers: the most common requests there are, an anonymous ``GET /api/handles/{handle}``
of a record in the cache and the resolver's redirect ``GET /{handle}``, answered without
routing, middlewares or the view.

The views keep each such answer they give (``HotAnswers.keep``, ``keep_redirect``) with the
cache entry it was made from, by the request's exact path (and, for the resolver, whose
answer depends on it, its ``Accept``). The same request again (a ``GET`` with no query and no
``Authorization``) is answered before the application's routing, from what was kept, through
the same functions the views use (``cached_response``, ``redirect_response``) and with the
application's ``on_response_prepare`` hooks (by the route's match), while the entry
stays (``Lookup.dropped``, its TTL, the store caught up): byte for byte the view's answer,
counted in the cache's hits and in the request metrics as the view's are. Anything else, and a
request whose entry went, takes the application's own way, which keeps it again.

Only answers that are the same every time are kept: the API's whole public view (no index or
type filter, no ``pretty``), and a redirect chosen without a 10320/loc list (whose choice may
depend on the client's address or on chance).

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
from ..resolver.locations import Redirect
from ..responses import cached_response, redirect_response
from ..service import Resolution

__all__ = ["HotAnswers"]

#: Requests kept at most (about 300 bytes each); at more, all are forgotten (the hot ones come
#: back at their next ask).
_MOST = 50_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class _Hot:
    cache: ResolutionCache
    lookup: Lookup
    match_info: web.UrlMappingMatchInfo
    route: str  # the request metrics' name of the route
    answer: Answer | None = None  # the API's answer
    redirect: Redirect | None = None  # or the resolver's redirect, with its page
    page: str = ""


class HotAnswers:
    def __init__(self, metrics: Metrics, now: Callable[[], float]) -> None:
        self._metrics = metrics
        self._now = now  # the service's clock, for the caching headers
        #: By the raw path for the API, by the raw path and ``Accept`` for the resolver.
        self._kept: dict[str | tuple[str, str], _Hot] = {}
        self._matches: dict[str, web.UrlMappingMatchInfo] = {}
        self.answered = 0  # answers given here

    def keep(self, request: web.Request, resolution: Resolution, answer: Answer) -> None:
        """The API's view answered ``request`` with ``answer``, made from ``resolution``'s
        cache entry: keep it for the same request again."""
        hot = self._hot(request, resolution)
        if hot is not None:
            hot.answer = answer
            self._keep(request.raw_path, hot)

    def keep_redirect(
        self, request: web.Request, resolution: Resolution, target: Redirect, page: str
    ) -> None:
        """The resolver redirected ``request`` to ``target`` (with ``page``), chosen from
        ``resolution``'s cache entry alone: keep it for the same request again."""
        hot = self._hot(request, resolution)
        if hot is not None:
            hot.redirect, hot.page = target, page
            self._keep((request.raw_path, request.headers.get("Accept", "")), hot)

    def _hot(self, request: web.Request, resolution: Resolution) -> _Hot | None:
        if request.method != "GET" or request.query_string or "Authorization" in request.headers:
            return None
        entry, cache = resolution.entry, resolution.cache
        if entry is None or cache is None or entry.dropped:
            return None  # (out of the cache: a TTL of 0, a read a write overtook)
        info = request.match_info
        resource = info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        # One match a route, the first kept (its values are that request's): what a hot
        # answer's preparation reads of it is the route's applications.
        info = self._matches.setdefault(route, info)
        return _Hot(cache, entry, info, route)

    def _keep(self, key: str | tuple[str, str], hot: _Hot) -> None:
        if len(self._kept) >= _MOST:
            self._kept.clear()
        self._kept[key] = hot

    def wrap(self, handle: Handler) -> Handler:
        """``handle`` (the application's own request handler), with kept answers first."""
        kept, metrics = self._kept, self._metrics

        async def hot_first(request: web.Request) -> web.StreamResponse:
            if request.method != "GET":
                return await handle(request)
            key: str | tuple[str, str] = request.raw_path
            hot = kept.get(key)
            if hot is None:
                key = (request.raw_path, request.headers.get("Accept", ""))
                hot = kept.get(key)
            if hot is None or "Authorization" in request.headers:
                return await handle(request)
            started = time.perf_counter()
            cache, lookup = hot.cache, hot.lookup
            if lookup.dropped or cache.clock() >= lookup.expires or not cache.caught_up():
                del kept[key]
                return await handle(request)
            cache.hit()
            self.answered += 1
            response: web.Response
            if hot.answer is not None:
                response = cached_response(
                    request,
                    hot.answer.body,
                    etag=hot.answer.etag,
                    content_type="application/json",
                    expires=lookup.expires,
                    now=self._now(),
                )
            else:
                assert hot.redirect is not None
                response = redirect_response(
                    hot.redirect.status,
                    hot.redirect.url,
                    hot.page,
                    expires=lookup.expires,
                    now=self._now(),
                )
            # What the router found for a request of the route (aiohttp's, private): the
            # response's preparation runs the application's on_response_prepare hooks by it.
            request._match_info = hot.match_info
            metrics.answered(hot.route, "GET", response.status, time.perf_counter() - started)
            return response

        return hot_first
