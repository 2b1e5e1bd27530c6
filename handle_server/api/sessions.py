"""``/api/sessions``: open a session, prove an identity in it, look at it, end it.

The answers follow the reference server's ``SessionsServlet``: ``POST /api/sessions`` is 201
with ``Location: /api/sessions/this``; ``GET``/``PUT``/``POST /api/sessions/this`` are 200, or
401 when an attempt to authenticate failed; ``DELETE`` is 204; a request naming no open session
is 403. Bodies are the session's representation::

    {"sessionId": "...", "nonce": "<b64>", "authenticated": true, "id": "300:TEST/USER01"}

plus ``keyDerivation`` when the request names an ``id`` without signing (see ``auth/sessions.py``)
and ``error`` when something went wrong. Parameters come from an ``Authorization: Handle``
header, then from a JSON object body, then from the query string.
"""

from __future__ import annotations

import base64

import orjson
from aiohttp import web

from .. import keys
from ..auth.identities import Identity, parse_identity
from ..auth.sessions import HandleAuthorization, Session, parse_handle_authorization
from ..errors import AuthenticationFailed, ProtocolError
from ..params import read_body
from ..responses import json_response

__all__ = ["SESSIONS", "SESSION_THIS", "end_session", "open_session", "session_this"]

SESSIONS = "/api/sessions"
SESSION_THIS = SESSIONS + "/this"


async def _params(request: web.Request) -> HandleAuthorization:
    header = HandleAuthorization()
    scheme, _, rest = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "handle":
        parsed = parse_handle_authorization(rest)
        if parsed is None:
            raise ProtocolError(None, "Malformed Authorization: Handle header")
        header = parsed
    fields: dict[str, str] = {}
    if request.content_type == "application/json" and request.can_read_body:
        try:
            body = orjson.loads(await read_body(request))
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(None, f"Invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise ProtocolError(None, "The body of a sessions request must be a JSON object")
        for name, value in body.items():
            if not isinstance(value, str | int):
                raise ProtocolError(None, f"Session parameter {name!r} must be a string")
            fields.setdefault(name.lower(), str(value))
    for name, value in request.query.items():
        fields.setdefault(name.lower(), value)
    return header.filled_from(HandleAuthorization.from_mapping(fields))


async def _representation(
    request: web.Request, session: Session, params: HandleAuthorization, error: str | None
) -> dict:
    body: dict = {
        "sessionId": session.id,
        "nonce": base64.b64encode(session.nonce).decode("ascii"),
        "authenticated": session.identity is not None,
    }
    if session.identity is not None:
        body["id"] = str(session.identity)
    if params.id is not None and not params.authenticating:
        try:
            asked: Identity = parse_identity(params.id)
        except ValueError as exc:
            error = error or str(exc)
        else:
            authenticator = request.app[keys.SERVICE].authenticator
            stored = await authenticator.stored_secret(asked)
            body["keyDerivation"] = authenticator.sessions.key_derivation(asked, stored)
    if error:
        body["error"] = error
    return body


async def _authenticate_in(
    request: web.Request, session: Session, params: HandleAuthorization, *, new: bool
) -> tuple[Session, str | None]:
    """Prove an identity in ``session`` (``new``: opened by this very request) if the request
    tries to: the session that holds it then (see ``SessionStore.sign_in``), and the error if
    it failed."""
    authenticator = request.app[keys.SERVICE].authenticator
    header = request.headers.get("Authorization", "")
    try:
        if header.strip().lower().startswith("basic"):
            identity = await authenticator.authenticate(header, client=request.remote)
        elif params.authenticating:
            identity = await authenticator.prove(session, params, client=request.remote)
        else:
            return session, None
    except AuthenticationFailed as exc:
        return session, exc.message
    assert identity is not None
    signed_in = await authenticator.sessions.sign_in(session, identity, known_before=not new)
    if signed_in is None:
        return session, "The session was closed meanwhile: open a new one"
    return signed_in, None


async def open_session(request: web.Request) -> web.Response:
    """POST /api/sessions"""
    params = await _params(request)
    if params.session_id is not None:
        raise ProtocolError(None, "POST /api/sessions opens a new session: use /api/sessions/this")
    session = request.app[keys.SERVICE].authenticator.sessions.open()
    session, error = await _authenticate_in(request, session, params, new=True)
    body = await _representation(request, session, params, error)
    return json_response(
        request, body, status=401 if error else 201, headers={"Location": SESSION_THIS}
    )


def _no_session(request: web.Request) -> web.Response:
    return json_response(
        request,
        {
            "authenticated": False,
            "error": "No open session with that sessionId (it may have expired): "
            "open one with POST /api/sessions",
        },
        status=403,
    )


async def session_this(request: web.Request) -> web.Response:
    """GET, PUT or POST /api/sessions/this: look at the session, or prove an identity in it."""
    params = await _params(request)
    sessions = request.app[keys.SERVICE].authenticator.sessions
    session = await sessions.get(params.session_id) if params.session_id else None
    if session is None:
        return _no_session(request)
    session, error = await _authenticate_in(request, session, params, new=False)
    body = await _representation(request, session, params, error)
    return json_response(request, body, status=401 if error else 200)


async def end_session(request: web.Request) -> web.Response:
    """DELETE /api/sessions/this"""
    params = await _params(request)
    sessions = request.app[keys.SERVICE].authenticator.sessions
    if not params.session_id or not await sessions.close(params.session_id):
        return _no_session(request)
    return web.Response(status=204)
