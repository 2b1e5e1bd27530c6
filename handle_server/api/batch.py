"""POST /api/batch: many writes in one request, each with exactly the rules of its single
request (``PUT`` / ``DELETE /api/handles/{handle}``), read and decided ``[batch] in_flight``
at a time with one store read and one commit for them all.

A JSON batch (``{"operations": [...], "atomic": false}``) is answered once, with a result for
every operation in order; ``"atomic": true`` applies all of them or none. An NDJSON batch (one
operation a line) streams: each result is written as soon as its group is committed, and no
more than ``in_flight`` operations are held at once, however long the stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from storage import HandleError, Outcome, StoreUnavailable

from .. import keys, params
from ..auth.identities import Identity
from ..errors import (
    AuthenticationNeeded,
    BodyTooLarge,
    ClientDisconnected,
    ProtocolError,
    RequestTimeout,
    client_message,
    status_and_code,
)
from ..responses import json_response
from ..service import BatchRefused, HandleService, WriteOp
from .views import check_indexes, put_values

__all__ = ["API_BATCH", "post_batch"]

log = logging.getLogger(__name__)

API_BATCH = "/api/batch"
NDJSON = "application/x-ndjson"
_PUT_FIELDS = frozenset({"op", "handle", "values", "index", "overwrite", "mintNewSuffix"})
_DELETE_FIELDS = frozenset({"op", "handle", "index"})
#: The answer to an operation of an atomic batch that failed because another one did.
_NOT_APPLIED = 424  # Failed Dependency (RFC 4918)


@dataclass(slots=True)
class _Parsed:
    """One operation of a batch: planned (``op``), or refused before it reached the store."""

    handle: str | None
    op: WriteOp | None = None
    error: HandleError | None = None


def _flag(raw: dict, name: str, default: bool, where: str) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError(None, f"{where}: {name} must be true or false, got {value!r}")
    return value


def _index_params(raw: dict, where: str) -> list[str]:
    """``index`` as the single request's ``?index=`` parameters: integers, or ``"various"``."""
    given = raw.get("index")
    if given is None:
        return []
    items = given if isinstance(given, list) else [given]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ProtocolError(None, f'{where}: index must be integers or "various"')
        out.append(str(item))
    return out


def _plan(service: HandleService, raw: Any, where: str) -> WriteOp:
    """The write one operation asks for, checked as its single request is."""
    if not isinstance(raw, dict):
        raise ProtocolError(None, f"{where}: an operation is a JSON object")
    kind = raw.get("op")
    if kind not in ("put", "delete"):
        raise ProtocolError(None, f'{where}: "op" must be "put" or "delete", got {kind!r}')
    unknown = sorted(set(raw) - (_PUT_FIELDS if kind == "put" else _DELETE_FIELDS))
    if unknown:
        raise ProtocolError(None, f"{where}: unknown field(s) for {kind}: {', '.join(unknown)}")
    handle = raw.get("handle")
    if not isinstance(handle, str) or not handle:
        raise ProtocolError(None, f'{where}: "handle" must be a non-empty string')
    index_params = _index_params(raw, where)
    if kind == "delete":
        if index_params:
            indexes = [params.int_value(i, "index") for i in index_params]
            return service.plan_remove_values(handle, indexes)
        return service.plan_delete(handle)
    overwrite = _flag(raw, "overwrite", True, where)
    mint = _flag(raw, "mintNewSuffix", False, where)
    if mint and index_params:
        raise ProtocolError(handle, "mintNewSuffix creates a handle: it cannot be used with index")
    if "values" not in raw:
        raise ProtocolError(handle, f'{where}: a put needs "values"')
    values = put_values(handle, raw["values"])
    if index_params:
        check_indexes(handle, index_params, values)
        return service.plan_add_values(handle, values, overwrite=overwrite)
    if mint:
        return service.plan_mint(handle, values)
    return service.plan_create(handle, values, overwrite=overwrite)


def _parse(service: HandleService, raw: Any, position: int) -> _Parsed:
    named = raw.get("handle") if isinstance(raw, dict) else None
    handle = named if isinstance(named, str) else None
    try:
        op = _plan(service, raw, f"operation {position}")
    except HandleError as error:
        return _Parsed(handle, error=error)
    return _Parsed(op.handle, op=op)


def _failure(handle: str | None, error: HandleError) -> dict:
    status, code = status_and_code(error)
    message = client_message(error)
    return {"handle": handle, "status": status, "responseCode": code, "message": message}


def _success(op: WriteOp, outcome: Outcome) -> dict:
    before, _ = outcome
    return {"handle": op.handle, "status": 201 if op.created(before) else 200, "responseCode": 1}


async def _apply(
    service: HandleService, parsed: Sequence[_Parsed], identity: Identity
) -> list[dict]:
    """The results of a group of operations, each applied or refused on its own."""
    ops = [p.op for p in parsed if p.op is not None]
    outcomes = iter(await service.write_batch(ops, identity, atomic=False) if ops else [])
    results = []
    for p in parsed:
        if p.op is None:
            assert p.error is not None
            results.append(_failure(p.handle, p.error))
            continue
        outcome = next(outcomes)
        if isinstance(outcome, HandleError):
            results.append(_failure(p.handle, outcome))
        else:
            results.append(_success(p.op, outcome))
    return results


async def _settled(
    service: HandleService, parsed: Sequence[_Parsed], identity: Identity
) -> list[dict]:
    """``_apply``; if the store fails the whole group, each of its operations says so (the
    groups before it stand)."""
    try:
        return await _apply(service, parsed, identity)
    except HandleError as error:
        if isinstance(error, StoreUnavailable):
            log.error("store unavailable: %s", error.message)
        return [_failure(p.handle, error) for p in parsed]


async def post_batch(request: web.Request) -> web.StreamResponse:
    """POST /api/batch."""
    identity = await params.identity(request)
    if identity is None:  # refused before the body is read: no write is anonymous
        raise AuthenticationNeeded(None, "Authentication needed")
    if request.content_type == NDJSON:
        return await _stream(request, identity)
    if request.content_type != "application/json":
        raise ProtocolError(
            None,
            f"Unsupported media type {request.content_type!r}: send application/json "
            f"(one batch) or {NDJSON} (a stream of operations)",
        )
    config = request.app[keys.CONFIG].batch
    body = await _read_json(request, config.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("operations"), list):
        raise ProtocolError(None, 'A batch is {"operations": [...], "atomic": false}')
    unknown = sorted(set(body) - {"operations", "atomic"})
    if unknown:
        raise ProtocolError(None, f"Unknown batch field(s): {', '.join(unknown)}")
    atomic = _flag(body, "atomic", False, "the batch")
    operations = body["operations"]
    if len(operations) > config.max_operations:
        raise BodyTooLarge(
            None,
            f"{len(operations)} operations in one batch; at most {config.max_operations} "
            f"(send more as {NDJSON}, which streams)",
        )
    service = request.app[keys.SERVICE]
    parsed = [_parse(service, raw, n) for n, raw in enumerate(operations)]
    if atomic:
        return await _atomic(request, service, parsed, identity)
    results: list[dict] = []
    for start in range(0, len(parsed), config.in_flight):
        results += await _settled(service, parsed[start : start + config.in_flight], identity)
    return json_response(request, {"responseCode": 1, "results": results})


async def _atomic(
    request: web.Request, service: HandleService, parsed: list[_Parsed], identity: Identity
) -> web.Response:
    """All of ``parsed`` in one transaction, or none: the answer of the first that failed,
    with every operation's result."""
    failed = next((n for n, p in enumerate(parsed) if p.error is not None), None)
    error = parsed[failed].error if failed is not None else None
    if failed is None:
        try:
            outcomes = await service.write_batch(
                [p.op for p in parsed],  # type: ignore[misc]
                identity,
                atomic=True,
            )
        except BatchRefused as refused:
            failed, error = refused.index, refused.error
        else:
            results = [_success(p.op, o) for p, o in zip(parsed, outcomes, strict=True)]  # type: ignore[arg-type]
            return json_response(request, {"responseCode": 1, "results": results})
    assert failed is not None and error is not None
    status, code = status_and_code(error)
    results = []
    for n, p in enumerate(parsed):
        if n == failed:
            results.append(_failure(p.handle, error))
        else:
            results.append(
                {
                    "handle": p.handle,
                    "status": _NOT_APPLIED,
                    "responseCode": 2,
                    "message": f"Not applied: operation {failed} failed",
                }
            )
    body = {
        "responseCode": code,
        "message": f"Operation {failed} ({parsed[failed].handle}) failed: "
        f"{client_message(error)}; nothing of the batch was applied",
        "results": results,
    }
    return json_response(request, body, status=status)


async def _read_json(request: web.Request, limit: int) -> Any:
    """A JSON batch body, at most ``limit`` bytes, within ``[server] body_timeout``."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(None, f"Batch body larger than {limit} bytes")
    chunks, size = [], 0
    # While it waits for the body, the request holds no slot of max_concurrent_requests.
    async with request.config_dict[keys.LIMIT].waiting_for_body(request):
        async for chunk in _chunks(request):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(None, f"Batch body larger than {limit} bytes")
            chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(None, f"Invalid JSON in batch: {exc}") from None


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives; each piece within ``[server] body_timeout`` of the one
    before (a stream may be long, but never stalled)."""
    timeout = request.app[keys.CONFIG].server.body_timeout
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            raise RequestTimeout(None, f"No batch data received for {timeout} seconds") from None
        except ConnectionResetError:
            raise ClientDisconnected(None, "The client closed the connection mid-batch") from None
        if not chunk:
            return
        yield chunk


async def _lines(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The non-blank lines of an NDJSON body, each at most ``limit`` bytes."""
    pending = b""
    async for chunk in _chunks(request):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > limit:
            raise BodyTooLarge(None, f"A batch line longer than {limit} bytes")
        for line in lines:
            if len(line) > limit:
                raise BodyTooLarge(None, f"A batch line longer than {limit} bytes")
            if line.strip():
                yield line
    if pending.strip():
        yield pending


async def _stream(request: web.Request, identity: Identity) -> web.StreamResponse:
    """An NDJSON batch: results written a group at a time, in order, as the operations come.
    While a group is decided and committed, the next is read and parsed (so at most two are
    held); it is decided only after the one before is committed, and so sees its writes. A
    stream that breaks (a line too long, a stall) ends the batch with a last result that says
    why; everything before it stands. A client that goes away gets nothing more, and what it
    sent after the group being committed is not applied."""
    config = request.app[keys.CONFIG]
    service = request.app[keys.SERVICE]
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    group: list[_Parsed] = []
    position = 0
    committing: asyncio.Future[None] | None = None

    async def settle(parsed: list[_Parsed]) -> None:
        results = await _settled(service, parsed, identity)
        await response.write(b"".join(orjson.dumps(r) + b"\n" for r in results))

    async def hand_over() -> None:
        """The group read so far goes to be committed, after the one before it."""
        nonlocal group, committing
        if committing is not None:
            await committing
            committing = None
        if group:
            committing = asyncio.ensure_future(settle(group))
            group = []

    broken: HandleError | None = None
    try:
        async for line in _lines(request, config.server.max_body_bytes):
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                error = ProtocolError(None, f"operation {position}: invalid JSON: {exc}")
                group.append(_Parsed(None, error=error))
            else:
                group.append(_parse(service, raw, position))
            position += 1
            if len(group) >= config.batch.in_flight:
                await hand_over()
    except ClientDisconnected:
        if committing is not None:
            await asyncio.wait([committing])  # (it finishes; nobody hears its answer)
        return response
    except HandleError as error:
        broken = error
    await hand_over()
    await hand_over()
    if broken is not None:
        await response.write(orjson.dumps(_failure(None, broken)) + b"\n")
    await response.write_eof()
    return response
