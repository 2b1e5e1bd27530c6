"""Native messages over HTTP, as the reference's HTTP interface takes them: a ``POST`` (any
path) with ``Content-Type: application/x-hdl-message`` whose body is an envelope and its
message; the answer is the same bytes the TCP interface sends."""

from __future__ import annotations

from aiohttp import web

from .. import params
from ..errors import ProtocolError
from . import codec
from .codec import MessageError
from .service import NativeService

__all__ = ["CONTENT_TYPE", "NATIVE", "message"]

CONTENT_TYPE = "application/x-hdl-message"
#: The application's native service (``service.NativeService``).
NATIVE = web.AppKey("native", NativeService)


async def message(request: web.Request) -> web.Response:
    """POST /{anything} with a native message."""
    if request.content_type != CONTENT_TYPE:
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    data = await params.read_body(request)
    try:
        envelope = codec.decode_envelope(data)
    except MessageError as exc:
        raise ProtocolError(None, f"Not a native message: {exc}") from None
    if envelope.length != len(data) - codec.ENVELOPE.size:
        raise ProtocolError(None, "The envelope's length is not the body's")
    native, message = request.app[NATIVE], data[codec.ENVELOPE.size :]
    answer = native.quick(data, client=request.remote, transport="http")
    if answer is None:
        answer = await native.answer(envelope, message, client=request.remote, transport="http")
    return web.Response(body=answer, content_type=CONTENT_TYPE)
