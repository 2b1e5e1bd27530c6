"""What the server answers a native request. Every operation goes through ``HandleService``:
the REST API's rules, authorization, cache and store; nothing here decides who may do what.

Served: resolution (index and type filters, public-only, authoritative reads bypassing the
cache; a request that is not public-only and selects a value that is not public is
challenged, as the reference does), get site info, create (with overwrite, and the mint
flag), delete, add, remove and modify values, list handles (in messages of 50, continued),
and the challenge-response that proves an identity (``auth.py``). Answers to ``certify``
requests are signed with the server's key, as the reference signs them. Anything else gets
the reference's RC 5 (operation not supported).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from storage import HandleError

from ..auth.identities import Identity
from ..cache import Lookup
from ..errors import InvalidHandle, TooManyFailures, status_and_code
from ..service import HandleService, select
from . import codec, sessions, signing
from .auth import ChallengeExpired, Challenges, InvalidCredential
from .codec import Envelope, Message, MessageError
from .sessions import NativeSessions, SessionError

if TYPE_CHECKING:  # the access log's module is HTTP's too: not imported by the rules
    from ..ops.access_log import NativeAccessLog

__all__ = ["NativeService"]

log = logging.getLogger(__name__)

#: Answers expire twelve hours after they are made, as the reference's do.
_ANSWER_LIFETIME = 12 * 3600
#: The site info serial number answers carry when no site is configured.
_SITE_SERIAL = 1
#: Handles per list-handles message (the reference's LIST_HANDLES_PER_MSG).
LIST_BATCH = 50
#: Operations that change the store: refused on UDP, as on the reference's query-only port.
_ADMIN_OPS = {
    codec.OC_CREATE_HANDLE,
    codec.OC_DELETE_HANDLE,
    codec.OC_ADD_VALUE,
    codec.OC_REMOVE_VALUE,
    codec.OC_MODIFY_VALUE,
    codec.OC_LIST_HANDLES,
}
#: Response codes of the native protocol's own refusals (the rest: ``status_and_code``).
_NATIVE_CODES: dict[type[HandleError], int] = {
    InvalidCredential: codec.RC_INVALID_CREDENTIAL,
    ChallengeExpired: codec.RC_AUTHEN_TIMEOUT,
}


_NO_SESSION = "Invalid session id or session timeout"
#: Flags that take a resolution off the quick path: each asks for more than a cached answer.
_NOT_QUICK = (
    codec.FLAG_AUTHORITATIVE
    | codec.FLAG_CERTIFY
    | codec.FLAG_ENCRYPT
    | codec.FLAG_REQUEST_DIGEST
    | codec.FLAG_CONTINUOUS
)
#: The shortest message the quick path reads: header, an empty handle, two empty lists and
#: an empty credential.
_QUICK_SHORTEST = 24 + 4 + 8 + 4


#: Requests kept with their answers by ``quick``, for each transport (the access log names
#: it); at more, all are forgotten.
_HOT_REQUESTS = 4096


@dataclass(slots=True)
class _Hot:
    """A request ``quick`` answered, kept with its answer while ``lookup`` stays in the cache:
    the answer is ``head`` + the request id + ``tail``, and ``tail`` is ``before`` + the
    expiration (made ``second``) + ``after``. ``logged``: the access log's fields, and
    ``log_tail`` what the access log makes of them once."""

    lookup: Lookup
    head: bytes
    before: bytes
    after: bytes
    second: int
    tail: bytes
    logged: tuple[str, str, str, int, int]
    log_tail: str | None = None


class _Challenged(Exception):
    """The request needs an identity: answer with a challenge."""


class NativeService:
    def __init__(
        self,
        handles: HandleService,
        *,
        challenges: Challenges,
        sessions: NativeSessions | None = None,
        key: signing.PrivateKey | None = None,
        site: bytes | None = None,
        site_serial: int = _SITE_SERIAL,
        clock: Callable[[], float] = time.time,
        answered: Callable[[int, int], None] = lambda op, rc: None,
        access: NativeAccessLog | None = None,
    ) -> None:
        self.handles = handles
        self.challenges = challenges
        self.sessions = sessions
        self.key = key
        self.site = site
        self.site_serial = site_serial
        self._clock = clock
        self._answered = answered  # told each answer's operation and response code
        self.access = access
        self._hot: dict[str, dict[bytes, _Hot]] = {"udp": {}, "tcp": {}, "http": {}}
        #: Answers of ``quick`` sent and not yet counted nor logged (``_afterwards``).
        self._unaccounted: list[tuple[_Hot, str | None, bool]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def answer(
        self,
        envelope: Envelope,
        data: bytes,
        *,
        client: str | None = None,
        transport: str = "tcp",
    ) -> bytes:
        """The whole answer (envelopes and messages) to the message ``data`` that came in
        ``envelope``: in the request's protocol version, with its request id."""
        answers = self.answers(envelope, data, client=client, transport=transport)
        return b"".join([m async for m in answers])

    async def answers(
        self,
        envelope: Envelope,
        data: bytes,
        *,
        client: str | None = None,
        transport: str = "tcp",
    ) -> AsyncIterator[bytes]:
        """The answer as it is made, one message (with its envelope) at a time: a list of
        handles comes in many. ``transport``: tcp, udp or http (for the access log; changes
        are refused over UDP)."""
        started = time.perf_counter()
        session_id = envelope.session_id
        udp = transport == "udp"
        try:
            request = codec.decode_message(data)
        except MessageError as exc:
            request = Message(0, 0)
            logged = _Logged(0, "-")
            replies: AsyncIterator[Message] = _one(
                self._error(request, codec.RC_PROTOCOL_ERROR, str(exc))
            )
        else:
            logged = _Logged(request.op_code, _logged_handle(request.op_code, data))
            try:
                reply = await self._reply(envelope, request, data, client, udp, logged)
            except _InSession as moved:
                session_id = moved.session_id
                reply = moved.reply
            replies = self._list(reply) if isinstance(reply, _Listing) else _one(reply)
        # A certified answer in a session is signed with the session's key (looked up once,
        # and only then); the answer that sets a session up, with the server's.
        session_key: bytes | None = None
        signs_in_session = (
            session_id and self.sessions is not None and request.op_code != codec.OC_SESSION_SETUP
        )
        sent, code = 0, codec.RC_PROTOCOL_ERROR
        async for reply in replies:
            if signs_in_session and session_key is None and reply.flag(codec.FLAG_CERTIFY):
                session = await self.sessions.get(session_id)  # type: ignore[union-attr]
                session_key = session.key if session is not None else None
                signs_in_session = False
            self._answered(reply.op_code, reply.response_code)
            code = reply.response_code
            out = Envelope(
                envelope.major,
                envelope.minor,
                session_id=session_id,
                request_id=envelope.request_id,
            )
            message = self._encode(reply, out, session_key)
            sent += 20 + len(message)
            yield out._replace(length=len(message)).encode() + message
        if self.access is not None:
            name = codec.OPERATIONS.get(logged.op, f"op-{logged.op}")
            self.access.log(
                transport,
                client,
                name + (" (answered)" if logged.answered else ""),
                logged.handle,
                code,
                sent,
                time.perf_counter() - started,
            )

    def quick(self, packet: bytes, *, client: str | None, transport: str) -> bytes | None:
        """The answer to the most common request there is (a public-only resolution of a
        whole record, not authoritative, not certified, no digest, no session) when its
        record is in the cache: made at once, without a task or a wait, byte for byte what
        ``answers`` makes. ``packet``: the envelope and the message. ``None``: anything else
        (ask ``answers``).

        A request answered here once is kept with its answer (``_Hot``) while the cache
        entry it was made from stays: the same request again (from any client, with any
        request id) gets the kept answer with its request id and the time put in. The answer
        is counted and logged after it is sent (``_afterwards``)."""
        hots = self._hot[transport]
        key = packet[:8] + packet[12:36] + packet[40:]  # all but the id and the expiration
        hot = hots.get(key)
        cache = self.handles.cache
        if hot is not None:
            lookup = hot.lookup
            if not lookup.dropped and cache.clock() < lookup.expires and cache.caught_up():
                self._afterwards(hot, client, True)
                second = int(self._clock())
                if second != hot.second:
                    hot.tail = hot.before + (second + _ANSWER_LIFETIME).to_bytes(4) + hot.after
                    hot.second = second
                return hot.head + packet[8:12] + hot.tail
            del hots[key]
        return self._quick(packet, key, client, transport)

    def _quick(self, packet: bytes, key: bytes, client: str | None, transport: str) -> bytes | None:
        if len(packet) < codec.ENVELOPE.size + _QUICK_SHORTEST:
            return None
        envelope = codec.decode_envelope(packet[: codec.ENVELOPE.size])
        data = packet[codec.ENVELOPE.size :]
        if envelope.session_id or envelope.flags or envelope.length != len(data):
            return None
        op, rc, flags, _, recursion, _, _, body_length = codec.HEADER.unpack_from(data)
        if op != codec.OC_RESOLUTION or rc or not flags & codec.FLAG_PUBLIC_ONLY:
            return None
        if flags & _NOT_QUICK or codec.HEADER.size + body_length + 4 != len(data):
            return None
        name_length = int.from_bytes(data[24:28], "big")
        end = 28 + name_length
        if end + 8 != codec.HEADER.size + body_length or data[end:] != bytes(12):
            return None  # index or type filters, or a credential
        name = data[28:end]
        try:
            lookup = self.handles.cache.peek(name.decode("utf-8"))
        except UnicodeDecodeError:
            return None
        if lookup is None or lookup.record is None or not lookup.record.values:
            return None
        if lookup.native is None:
            values = lookup.record.values
            encoded = [codec.encode_value(v) for v in values]
            lookup.native = struct.pack(">I", len(encoded)) + b"".join(encoded)
        body = codec.string(name) + lookup.native
        second = int(self._clock())
        flags = (flags | codec.FLAG_AUTHORITATIVE) & ~codec.FLAG_CONTINUOUS
        header = codec.HEADER.pack(
            op,
            codec.RC_SUCCESS,
            flags,
            self.site_serial,
            recursion,
            0,
            second + _ANSWER_LIFETIME,
            len(body),
        )
        length = len(header) + len(body) + 4
        head = packet[:2] + bytes(6)  # the request's version; no flags, no session
        before = bytes(4) + length.to_bytes(4) + header[:16]  # from the envelope's sequence
        after = header[20:] + body + b"\x00\x00\x00\x00"  # from the body's length
        tail = before + header[16:20] + after
        handle = name[:200].decode("utf-8", "replace")
        logged = (transport, "resolution", handle, codec.RC_SUCCESS, 20 + length)
        hots = self._hot[transport]
        if len(hots) >= _HOT_REQUESTS:
            hots.clear()  # a new set of hot requests: they come back at their next ask
        hot = hots[key] = _Hot(lookup, head, before, after, second, tail, logged)
        self._afterwards(hot, client, False)  # ``peek`` counted the hit
        return head + packet[8:12] + tail

    def _afterwards(self, hot: _Hot, client: str | None, hit: bool) -> None:
        """Count and log an answer of ``quick`` once it is sent: the counting waits for the
        loop's next turn (and is done there for all the turn's answers at once), so that a
        client waiting for its answer does not wait for its log line too."""
        unaccounted = self._unaccounted
        unaccounted.append((hot, client, hit))
        if len(unaccounted) > 1:
            return
        # The loop is kept: on Python 3.11 each ``get_running_loop`` is a ``getpid`` call.
        loop = self._loop
        if loop is None or not loop.is_running():
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: at once
                self._account()
                return
        loop.call_soon(self._account)

    def _account(self) -> None:
        unaccounted, self._unaccounted = self._unaccounted, []
        cache, access = self.handles.cache, self.access
        for hot, client, hit in unaccounted:
            if hit:
                cache.hit()
            self._answered(codec.OC_RESOLUTION, codec.RC_SUCCESS)
            if access is not None:
                hot.log_tail = access.line(client, hot.logged, hot.log_tail)

    def refusal(self, envelope: Envelope, data: bytes, text: str) -> bytes:
        """A short RC 2 answer saying ``text``, for a request not answered over UDP (its
        answer is too long for a datagram, or its address asks too often): the reference's
        clients take RC 2 as a failure of the interface and ask again over the next one, TCP,
        at once."""
        try:
            request = codec.decode_message(data)
        except MessageError:
            request = Message(0, 0)
        # No request digest: the refusal stays shorter than the request.
        request = replace(request, op_flags=request.op_flags & ~codec.FLAG_REQUEST_DIGEST)
        reply = self._error(request, codec.RC_ERROR, text)
        self._answered(reply.op_code, reply.response_code)
        message = codec.encode_message(
            replace(reply, op_flags=reply.op_flags & ~codec.FLAG_CERTIFY)
        )
        out = Envelope(
            envelope.major,
            envelope.minor,
            session_id=envelope.session_id,
            request_id=envelope.request_id,
            length=len(message),
        )
        return out.encode() + message

    def _encode(self, reply: Message, envelope: Envelope, session_key: bytes | None) -> bytes:
        """``reply`` on the wire. If the request asked to ``certify`` its answer, it is signed:
        in a session with a MAC under the session key, else with the server's key (as the
        reference signs)."""
        if not reply.flag(codec.FLAG_CERTIFY) or (self.key is None and session_key is None):
            return codec.encode_message(reply)
        unsigned = codec.encode_message(reply)[:-4]  # header and body, without a credential
        if session_key is not None:
            counter = secrets.randbits(31)
            digest = sessions.mac(
                session_key,
                unsigned,
                major=envelope.major,
                minor=envelope.minor,
                session_id=envelope.session_id,
                request_id=envelope.request_id,
                counter=counter,
            )
            credential = sessions.mac_credential(counter, digest)
        else:
            assert self.key is not None
            credential = signing.signed_credential(self.key, unsigned)
        return unsigned + codec.string(credential)

    # -- dispatch --------------------------------------------------------------------------

    async def _reply(
        self,
        envelope: Envelope,
        request: Message,
        raw: bytes,
        client: str | None,
        udp: bool,
        logged: _Logged,
    ) -> Message | _Listing:
        if request.response_code != 0:
            return self._error(request, codec.RC_PROTOCOL_ERROR, "Expected a request")
        op = request.op_code
        if op in _ADMIN_OPS and udp:
            return self._error(
                request, codec.RC_PROTOCOL_ERROR, "Received admin request on non-admin port"
            )
        if op == codec.OC_GET_SITE_INFO:
            if self.site is None:
                return self._error(request, codec.RC_OPERATION_NOT_SUPPORTED, "No site info")
            return self._response(request, codec.RC_SUCCESS, self._digest(request) + self.site)
        if op == codec.OC_RESPONSE_TO_CHALLENGE:
            return await self._answered_challenge(envelope, request, client, logged)
        if op == codec.OC_SESSION_SETUP and self.sessions is not None:
            return await self._session_setup(envelope, request)
        if op == codec.OC_SESSION_TERMINATE and self.sessions is not None:
            if not await self.sessions.end(envelope.session_id):
                return self._error(request, codec.RC_SESSION_TIMEOUT, _NO_SESSION)
            return self._done(request)
        if op == codec.OC_RESOLUTION or op in _ADMIN_OPS:
            identity = None
            if envelope.session_id:
                session = await self.sessions.get(envelope.session_id) if self.sessions else None
                if session is None:
                    return self._error(request, codec.RC_SESSION_TIMEOUT, _NO_SESSION)
                if session.identity is not None:
                    # An authenticated session: its requests need only their MAC.
                    try:
                        session = await self.sessions.check_mac(session, envelope, request)
                    except SessionError as exc:
                        return self._error(request, exc.code, exc.message)
                    await self.sessions.save(session)
                    identity = session.identity
            try:
                return await self._perform(request, identity)
            except _Challenged:
                return await self._challenge(envelope, request, raw, client)
        return self._error(
            request,
            codec.RC_OPERATION_NOT_SUPPORTED,
            f"Operation {op} is not served here",
        )

    async def _perform(self, request: Message, identity: Identity | None) -> Message | _Listing:
        """Carry out ``request`` as ``identity``; ``_Challenged`` if it needs one and
        ``identity`` is ``None``."""
        try:
            return await self._operation(request, identity)
        except MessageError as exc:
            return self._error(request, codec.RC_PROTOCOL_ERROR, str(exc))
        except HandleError as exc:
            code = _NATIVE_CODES.get(type(exc)) or status_and_code(exc)[1]
            # The reference answers "not found" with an empty message.
            text = "" if code == codec.RC_HANDLE_NOT_FOUND else exc.message
            return self._error(request, code, text)

    async def _operation(self, request: Message, identity: Identity | None) -> Message | _Listing:
        op = request.op_code
        if op == codec.OC_RESOLUTION:
            return await self._resolve(request, identity)
        if op == codec.OC_LIST_HANDLES:
            # The names come in ``_list``; here only the permission is checked.
            prefix = self.handles.listing_prefix(_text(codec.decode_handle_body(request.body)))
            if identity is None:
                raise _Challenged
            await self.handles.count_handles(prefix, identity)
            return _Listing(request, prefix)
        if op == codec.OC_DELETE_HANDLE:
            handle = _text(codec.decode_handle_body(request.body))
            self.handles.check_handle(handle)
            if identity is None:
                raise _Challenged
            await self.handles.delete(handle, identity=identity)
            return self._done(request)
        if op == codec.OC_REMOVE_VALUE:
            name, indexes = codec.decode_indexes_body(request.body)
            handle = _text(name)
            self.handles.check_handle(handle)
            if identity is None:
                raise _Challenged
            await self.handles.remove_values(handle, indexes, identity=identity)
            return self._done(request)
        name, values = codec.decode_values_body(request.body)
        handle = _text(name)
        minting = op == codec.OC_CREATE_HANDLE and request.flag(codec.FLAG_MINT)
        self.handles.check_handle(handle, stem=minting)
        if identity is None:
            raise _Challenged
        if minting:
            made = await self.handles.mint(handle, values, identity=identity)
            return self._response(
                request, codec.RC_SUCCESS, self._digest(request) + codec.string(made.encode())
            )
        if op == codec.OC_CREATE_HANDLE:
            overwrite = request.flag(codec.FLAG_OVERWRITE)
            new = await self.handles.create(handle, values, overwrite=overwrite, identity=identity)
            # As the reference: the answer says "overwrite" only if a record was replaced.
            done = self._done(request)
            flags = done.op_flags & ~codec.FLAG_OVERWRITE
            return replace(done, op_flags=flags if new else flags | codec.FLAG_OVERWRITE)
        if op == codec.OC_ADD_VALUE:
            overwrite = request.flag(codec.FLAG_OVERWRITE)
            await self.handles.add_values(handle, values, overwrite=overwrite, identity=identity)
            return self._done(request)
        await self.handles.modify_values(handle, values, identity=identity)
        return self._done(request)

    async def _resolve(self, request: Message, identity: Identity | None) -> Message:
        asked = codec.ResolutionRequest.decode(request.body)
        handle = _text(asked.handle)
        self.handles.check_handle(handle)  # never a proxy for other sites' handles (301)
        types = [t.decode("utf-8", "replace") for t in asked.types]
        public_only = request.flag(codec.FLAG_PUBLIC_ONLY)
        if identity is None and not public_only:
            # As the reference: a request for every readable value is challenged if it
            # selects a value that is not public (and answered with the public ones if not).
            record = await self.handles.store.get(handle)
            if record is not None and any(
                not v.public_read for v in select(record.values, asked.indexes, types)
            ):
                raise _Challenged
            public_only = True
        resolution = await self.handles.resolve(
            handle,
            indexes=asked.indexes,
            types=types,
            public_only=public_only,
            identity=identity,
            refresh=request.flag(codec.FLAG_AUTHORITATIVE),
            asked_for_private=True,
        )
        if not resolution.values:
            return self._error(request, codec.RC_VALUES_NOT_FOUND, "")
        body = codec.encode_resolution_body(
            asked.handle, resolution.values, digest=self._digest(request)
        )
        return self._response(request, codec.RC_SUCCESS, body)

    # -- challenges ------------------------------------------------------------------------

    async def _challenge(
        self, envelope: Envelope, request: Message, raw: bytes, client: str | None
    ) -> Message:
        if not self.challenges.rate.allows(client or "-"):
            error = TooManyFailures(None, "Too many challenges asked for", retry_after=1)
            return self._error(request, status_and_code(error)[1], error.message)
        challenge = await self.challenges.make(envelope, request, raw)
        body = codec.challenge_body(challenge.nonce, challenge.digest_code, challenge.digest)
        reply = self._response(request, codec.RC_AUTHENTICATION_NEEDED, body)
        # The reference always returns the request's digest with a challenge.
        flags = reply.op_flags | codec.FLAG_REQUEST_DIGEST
        if challenge.digest_code == 0:
            flags &= ~codec.FLAG_REQUEST_DIGEST
        raise _InSession(replace(reply, op_flags=flags), challenge.session_id)

    async def _answered_challenge(
        self, envelope: Envelope, request: Message, client: str | None, logged: _Logged
    ) -> Message | _Listing:
        """An OC 200: the answer to the kept request, carried out as the identity proved (a
        refusal answers the kept request, as the reference's does)."""
        try:
            challenge = await self.challenges.take(envelope.session_id)
        except HandleError as exc:
            return self._error(request, _NATIVE_CODES[type(exc)], exc.message)
        original = codec.decode_message(challenge.request)
        logged.op, logged.answered = original.op_code, True
        logged.handle = _logged_handle(original.op_code, challenge.request)
        try:
            identity = await self.challenges.prove(challenge, request.body, client=client)
        except MessageError as exc:
            return self._error(original, codec.RC_PROTOCOL_ERROR, str(exc))
        except HandleError as exc:
            code = _NATIVE_CODES.get(type(exc)) or status_and_code(exc)[1]
            return self._error(original, code, exc.message)
        session = await self.sessions.get(envelope.session_id) if self.sessions else None
        if session is not None:
            # A challenge inside a session: the session now holds the identity, once the
            # challenged request shows the session's MAC.
            sent_in = Envelope(
                challenge.major,
                challenge.minor,
                session_id=envelope.session_id,
                request_id=challenge.request_id,
            )
            try:
                session = await self.sessions.check_mac(session, sent_in, original)
            except SessionError as exc:
                return self._error(original, exc.code, exc.message)
            await self.sessions.save(replace(session, identity=identity))
        return await self._perform(original, identity)

    async def _session_setup(self, envelope: Envelope, request: Message) -> Message:
        assert self.sessions is not None
        try:
            session, data = await self.sessions.setup(request.body, envelope.major, envelope.minor)
        except SessionError as exc:
            return self._error(request, exc.code, exc.message)
        body = (
            self._digest(request)
            + struct.pack(">H", sessions.KEY_EXCHANGE_DH)
            + codec.string(data)
            + b"\x00\x00"  # the reference sizes the mode as four bytes and writes two
        )
        raise _InSession(self._response(request, codec.RC_SUCCESS, body), session.session_id)

    # -- list handles ----------------------------------------------------------------------

    async def _list(self, listing: _Listing) -> AsyncIterator[Message]:
        """The handles of a prefix, ``LIST_BATCH`` to a message, each but the last marked
        "continuous" (the caller was checked: ``_operation``)."""
        request, digest = listing.request, self._digest(listing.request)
        pending: list[bytes] = []
        async for batch in self.handles.iter_handles(listing.prefix, limit=None):
            pending.extend(name.encode("utf-8") for name in batch)
            while len(pending) > LIST_BATCH:
                part, pending = pending[:LIST_BATCH], pending[LIST_BATCH:]
                reply = self._response(
                    request, codec.RC_SUCCESS, codec.handles_body(part, digest=digest)
                )
                yield replace(reply, op_flags=reply.op_flags | codec.FLAG_CONTINUOUS)
        yield self._response(request, codec.RC_SUCCESS, codec.handles_body(pending, digest=digest))

    # -- answers ---------------------------------------------------------------------------

    def _digest(self, request: Message) -> bytes:
        return codec.request_digest(request) if request.flag(codec.FLAG_REQUEST_DIGEST) else b""

    def _done(self, request: Message) -> Message:
        return self._response(request, codec.RC_SUCCESS, self._digest(request))

    def _error(self, request: Message, code: int, text: str) -> Message:
        return self._response(request, code, codec.error_body(text, digest=self._digest(request)))

    def _response(self, request: Message, code: int, body: bytes) -> Message:
        return Message(
            request.op_code,
            code,
            # As the reference: the request's flags, and "authoritative" (this server homes
            # the handle); never "continuous" or "keep alive" of its own accord.
            (request.op_flags | codec.FLAG_AUTHORITATIVE) & ~codec.FLAG_CONTINUOUS,
            self.site_serial,
            request.recursion,
            int(self._clock()) + _ANSWER_LIFETIME,
            body,
        )


class _Listing:
    """A list-handles request allowed: its answer is the names, in many messages."""

    def __init__(self, request: Message, prefix: str) -> None:
        self.request, self.prefix = request, prefix


class _InSession(Exception):
    """The answer goes out in another session than the request's (a challenge's, a new
    one's)."""

    def __init__(self, reply: Message, session_id: int) -> None:
        self.reply, self.session_id = reply, session_id


@dataclass(slots=True)
class _Logged:
    """What the access log shows of a request: the operation carried out (an answer to a
    challenge carries out the request it answers), on which handle."""

    op: int
    handle: str
    answered: bool = False


#: Operations whose body starts with a handle (shown in the access log).
_NAMED = {codec.OC_RESOLUTION, *_ADMIN_OPS}


def _logged_handle(op: int, data: bytes) -> str:
    if op not in _NAMED:
        return "-"
    try:
        name = codec.Reader(data, codec.HEADER.size).string()
    except MessageError:
        return "-"
    return name[:200].decode("utf-8", "replace") or "-"


def _text(name: bytes) -> str:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHandle(None, "Handle is not valid UTF-8") from None


async def _one(message: Message) -> AsyncIterator[Message]:
    yield message
