"""What the server answers a native request: resolution through ``HandleService`` (the REST
API's rules, cache and store), and the reference's error answers for everything else."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from storage import HandleError, HandleNotFound

from ..errors import InvalidHandle, ServerNotResponsible
from ..service import HandleService
from . import codec
from .codec import Envelope, Message, MessageError

__all__ = ["NativeService"]

log = logging.getLogger(__name__)

#: Answers expire twelve hours after they are made, as the reference's do.
_ANSWER_LIFETIME = 12 * 3600
#: The site info serial number answers carry (this site's HS_SITE has serial 1).
_SITE_SERIAL = 1
_ERROR_CODES: dict[type[HandleError], int] = {
    HandleNotFound: codec.RC_HANDLE_NOT_FOUND,
    InvalidHandle: codec.RC_INVALID_HANDLE,
    ServerNotResponsible: codec.RC_SERVER_NOT_RESP,
}


class NativeService:
    def __init__(
        self,
        handles: HandleService,
        *,
        clock: Callable[[], float] = time.time,
        answered: Callable[[int, int], None] = lambda op, rc: None,
    ) -> None:
        self.handles = handles
        self._clock = clock
        self._answered = answered  # told each answer's operation and response code

    async def answer(self, envelope: Envelope, data: bytes) -> bytes:
        """The whole answer (envelope and message) to the message ``data`` that came in
        ``envelope``: in the request's protocol version, with its request id."""
        try:
            request = codec.decode_message(data)
        except MessageError as exc:
            request = Message(0, 0)
            reply = self._error(request, codec.RC_PROTOCOL_ERROR, str(exc))
        else:
            reply = await self._reply(request)
        self._answered(reply.op_code, reply.response_code)
        message = codec.encode_message(reply)
        out = Envelope(
            envelope.major,
            envelope.minor,
            session_id=envelope.session_id,
            request_id=envelope.request_id,
            length=len(message),
        )
        return out.encode() + message

    async def _reply(self, request: Message) -> Message:
        if request.response_code != 0:
            return self._error(request, codec.RC_PROTOCOL_ERROR, "Expected a request")
        if request.op_code == codec.OC_RESOLUTION:
            try:
                return await self._resolve(request)
            except MessageError as exc:
                return self._error(request, codec.RC_PROTOCOL_ERROR, str(exc))
            except HandleError as exc:
                code = next(
                    (rc for cls, rc in _ERROR_CODES.items() if isinstance(exc, cls)),
                    codec.RC_ERROR,
                )
                # The reference answers "not found" with an empty message.
                text = "" if code == codec.RC_HANDLE_NOT_FOUND else exc.message
                return self._error(request, code, text)
        return self._error(
            request,
            codec.RC_OPERATION_NOT_SUPPORTED,
            f"Operation {request.op_code} is not served here",
        )

    async def _resolve(self, request: Message) -> Message:
        asked = codec.ResolutionRequest.decode(request.body)
        try:
            handle = asked.handle.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidHandle(None, "Handle is not valid UTF-8") from None
        types = [t.decode("utf-8", "replace") for t in asked.types]
        # Anonymous: public values only, whatever the flag says (authenticated native
        # resolution comes with the native authentication).
        resolution = await self.handles.resolve(
            handle,
            indexes=asked.indexes,
            types=types,
            public_only=True,
            identity=None,
            refresh=request.flag(codec.FLAG_AUTHORITATIVE),
        )
        if not resolution.values:
            return self._error(request, codec.RC_VALUES_NOT_FOUND, "")
        body = codec.encode_resolution_body(
            asked.handle, resolution.values, digest=self._digest(request)
        )
        return self._response(request, codec.RC_SUCCESS, body)

    def _digest(self, request: Message) -> bytes:
        return codec.request_digest(request) if request.flag(codec.FLAG_REQUEST_DIGEST) else b""

    def _error(self, request: Message, code: int, text: str) -> Message:
        return self._response(request, code, codec.error_body(text, digest=self._digest(request)))

    def _response(self, request: Message, code: int, body: bytes) -> Message:
        return Message(
            request.op_code,
            code,
            # As the reference: the request's flags, and "authoritative" (this server homes
            # the handle); never "continuous" or "keep alive" of its own accord.
            (request.op_flags | codec.FLAG_AUTHORITATIVE) & ~codec.FLAG_CONTINUOUS,
            _SITE_SERIAL,
            request.recursion,
            int(self._clock()) + _ANSWER_LIFETIME,
            body,
        )
