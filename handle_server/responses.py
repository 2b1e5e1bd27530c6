"""Building answers: JSON in the API's encoding, and HTTP caching (Cache-Control from the
record's TTL, a strong ETag, 304 for a matching If-None-Match)."""

from __future__ import annotations

import base64
import functools
import hashlib
from email.utils import formatdate

import orjson
from aiohttp import web

__all__ = [
    "SecurityHeaders",
    "cached_response",
    "caching_headers",
    "etag_matches",
    "etag_of",
    "json_bytes",
    "json_response",
    "wants_json",
]


def json_bytes(request: web.Request, body: dict) -> bytes:
    """``?pretty`` indents."""
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 if "pretty" in request.query else 0)


def json_response(
    request: web.Request, body: dict, *, status: int = 200, headers: dict | None = None
) -> web.Response:
    return web.Response(
        body=json_bytes(request, body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def caching_headers(expires: float | None, now: float) -> dict[str, str]:
    """Shared caches may keep a public answer until its record's TTL runs out; an answer that
    may hold private values is not to be stored anywhere."""
    if expires is None:
        return {"Cache-Control": "private, no-store"}
    max_age = max(0, int(expires - now))
    return {
        "Cache-Control": f"public, max-age={max_age}",
        "Expires": _http_date(int(now) + max_age),
    }


@functools.lru_cache(maxsize=4096)
def _http_date(when: int) -> str:
    return formatdate(when, usegmt=True)


def etag_of(body: bytes) -> str:
    """A strong ETag: a digest of the body."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` of ``header`` names ``etag`` (or any: ``*``)."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def cached_response(
    request: web.Request,
    body: bytes,
    *,
    content_type: str,
    charset: str | None = None,
    expires: float | None,
    now: float,
    etag: str | None = None,
) -> web.Response:
    """A 200 answer with validators, or 304 when the client already holds this body
    (``etag``: the body's, when the caller has it already)."""
    etag = etag or etag_of(body)
    headers = {"ETag": etag, **caching_headers(expires, now)}
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)


def redirect_response(
    status: int, url: str, body: str, *, expires: float | None, now: float
) -> web.Response:
    """A redirect to ``url`` with its small page ``body`` (``pages.redirect_body``)."""
    headers = {"Location": url, **caching_headers(expires, now)}
    return web.Response(status=status, text=body, content_type="text/html", headers=headers)


def wants_json(request: web.Request) -> bool:
    """Whether the client prefers JSON to HTML (``Accept``, with q-values)."""
    accept = request.headers.get("Accept", "")
    best: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = part.strip().split(";")
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best[media.strip().lower()] = max(q, best.get(media.strip().lower(), 0.0))
    return best.get("application/json", 0.0) > max(
        best.get("text/html", 0.0), best.get("application/xhtml+xml", 0.0)
    )


class SecurityHeaders:
    """An ``on_response_prepare`` hook: no answer is to be sniffed into another type, and an
    HTML page (the resolver's, the error pages, ``/api/docs``) runs no script, loads nothing,
    posts its form only here, and is framed by no one. The pages hold no script and one
    inline stylesheet each, allowed by its hash."""

    def __init__(self, *stylesheets: str) -> None:
        hashes = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
            for css in stylesheets
        )
        self.policy = (
            f"default-src 'none'; style-src {hashes}; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        if response.content_type == "text/html":
            headers["Content-Security-Policy"] = self.policy
            headers["X-Frame-Options"] = "DENY"
