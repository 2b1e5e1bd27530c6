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

A kept answer is also given one step earlier still, by the connection itself
(``ops/connections.py`` asks ``wire``): a lone, plain ``GET`` of a kept path on an idle
HTTP/1.1 connection is answered with bytes written straight to the socket, without aiohttp's
request, task or response objects (and the connection closed after it when the request
asks). Those bytes are what aiohttp (pinned) writes for the same answer: the headers in its
order, its ``Date`` and ``Server``, and the hooks' ``Vary`` and security headers
(``tests/test_hot.py`` compares the two ways byte for byte).

What the skipped middlewares do needs nothing here: the answer is made at once (it holds no
slot of ``ConcurrencyLimit``), it is a success (``error_middleware``), and the address
``TrustedProxies`` would put in is not used by it (the access log sees the request as it
came, on either way).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

from ..cache import Answer, Lookup, ResolutionCache
from ..ops.metrics import Metrics
from ..resolver.locations import Redirect
from ..responses import cached_response, caching_headers, etag_matches, redirect_response
from ..service import Resolution

__all__ = ["HotAnswers"]

#: Requests kept at most (about 300 bytes each); at more, all are forgotten (the hot ones come
#: back at their next ask).
_MOST = 50_000

#: What follows ``Server`` in an API answer: the hook's header, the end of the headers.
_JSON_TAIL = b"X-Content-Type-Options: nosniff\r\n\r\n"

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
    #: The answer's bytes before its caching headers (a 304's too, for the API), between
    #: them and ``Date``, and after ``Server`` (``_make_parts``; the last two shared by
    #: all answers alike), and its body; then its caching headers, made for
    #: ``(max-age, second, Date)``.
    head: bytes = b""
    head_304: bytes = b""
    middle: bytes = b""
    tail: bytes = b""
    body: bytes = b""
    wire_for: tuple[int, int, str] | None = None
    caching: bytes = b""

    def gone(self) -> bool:
        """Whether the cache entry the answer was made from went (a write, the end of its
        TTL, a purge), or the store has changes the cache has not heard of yet."""
        lookup, cache = self.lookup, self.cache
        return lookup.dropped or cache.clock() >= lookup.expires or not cache.caught_up()


class HotAnswers:
    def __init__(self, metrics: Metrics, now: Callable[[], float], html_policy: str) -> None:
        self._metrics = metrics
        self._now = now  # the service's clock, for the caching headers
        #: ``SecurityHeaders``' Content-Security-Policy of an HTML answer.
        self._html_policy = html_policy
        #: By the raw path for the API, by the raw path and ``Accept`` for the resolver.
        self._kept: dict[str | tuple[str, str], _Hot] = {}
        self._matches: dict[str, web.UrlMappingMatchInfo] = {}
        self.answered = 0  # answers given here
        self.on_the_wire = 0  # of which by the connection itself
        self._date: tuple[str, bytes] = ("", b"")  # aiohttp's Date, and its header lines
        #: Parts of answers shared by all alike (``_make_parts``).
        self._html_tail = b""
        self._middles: dict[tuple[str, int], bytes] = {}

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
            if hot.gone():
                del kept[key]
                return await handle(request)
            cache, lookup = hot.cache, hot.lookup
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

    def wire(
        self, path: str, accept: str, if_none_match: str | None, *, close: bool = False
    ) -> tuple[bytes, int] | None:
        """The bytes of the kept answer to a plain anonymous HTTP/1.1 ``GET path`` with these
        headers (``accept`` "" when there is none), and its status, counted as ``hot_first``
        counts its answers; None when nothing is kept for it or the entry went (the
        application's way then forgets it). ``close``: the request asked for the connection
        to close after it (``Connection: close``), which the answer then says."""
        started = time.perf_counter()
        kept = self._kept
        hot = kept.get(path)
        if hot is None:
            hot = kept.get((path, accept))
            if hot is None:
                return None
        if hot.gone():
            return None  # (the application's way forgets it)
        cache, lookup = hot.cache, hot.lookup
        now = self._now()
        key = (int(lookup.expires - now), int(now), rfc822_formatted_time())
        if not hot.head and not self._make_parts(hot):
            return None
        if hot.wire_for != key:  # the caching headers and Date of this second
            hot.wire_for = key
            if self._date[0] != key[2]:
                self._date = (key[2], f"Date: {key[2]}\r\nServer: {SERVER_SOFTWARE}\r\n".encode())
            caching = caching_headers(lookup.expires, now)
            hot.caching = "".join(f"{k}: {v}\r\n" for k, v in caching.items()).encode()
        cache.hit()
        self.answered += 1
        self.on_the_wire += 1
        date = self._date[1] + b"Connection: close\r\n" if close else self._date[1]
        answer = hot.answer
        if answer is not None and if_none_match and etag_matches(if_none_match, answer.etag):
            wire = b"".join((hot.head_304, hot.caching, date, hot.tail))
            status = 304
        else:
            wire = b"".join((hot.head, hot.caching, hot.middle, date, hot.tail, hot.body))
            status = hot.redirect.status if hot.redirect is not None else 200
        self._metrics.answered(hot.route, "GET", status, time.perf_counter() - started)
        return wire, status

    def _make_parts(self, hot: _Hot) -> bool:
        """What aiohttp writes for ``cached_response`` / ``redirect_response`` as the hooks
        leave them, around the caching headers and ``Date``/``Server`` (which change with the
        second): the response's headers in the order they were set, then aiohttp's
        ``Content-Length`` (set with the body), ``Date`` and ``Server``, then the hooks'.
        False when the answer cannot go this way (a header aiohttp would refuse)."""
        if hot.answer is not None:
            body, etag = hot.answer.body, hot.answer.etag
            hot.head = f"HTTP/1.1 200 OK\r\nETag: {etag}\r\n".encode()
            hot.head_304 = f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n".encode()
            content = "Content-Type: application/json"
            hot.tail = _JSON_TAIL
        else:
            redirect = hot.redirect
            assert redirect is not None
            if "\r" in redirect.url or "\n" in redirect.url:
                return False  # (aiohttp refuses such a header; the application answers)
            body = hot.page.encode()
            status = HTTPStatus(redirect.status)
            hot.head = (
                f"HTTP/1.1 {status.value} {status.phrase}\r\nLocation: {redirect.url}\r\n"
            ).encode()
            content = "Content-Type: text/html; charset=utf-8"
            if not self._html_tail:
                self._html_tail = (
                    "Vary: Accept\r\nX-Content-Type-Options: nosniff\r\n"
                    f"Content-Security-Policy: {self._html_policy}\r\n"
                    "X-Frame-Options: DENY\r\n\r\n"
                ).encode()
            hot.tail = self._html_tail
        hot.body = body
        middle = self._middles.get((content, len(body)))
        if middle is None:
            if len(self._middles) >= 4096:
                self._middles.clear()
            middle = f"{content}\r\nContent-Length: {len(body)}\r\n".encode()
            self._middles[content, len(body)] = middle
        hot.middle = middle
        return True
