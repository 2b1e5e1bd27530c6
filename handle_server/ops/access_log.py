"""The access log: one line per answered request on the ``handle_server.access`` logger, in the
format ``[log] access_format`` names:

- ``combined`` (the default): the Apache/NCSA combined format,
  ``127.0.0.1 - - [23/Nov/2026:14:00:00 +0000] "GET /api/handles/TEST/1 HTTP/1.1" 200 312 "-"
  "curl/8.5.0"``;
- ``common``: the common log format, the same without referer and user agent;
- ``json``: one JSON object per line, alone on it (no logging prefix), for log shippers:
  ``{"time": ..., "remote": ..., "method": ..., "path": ..., "status": ..., "bytes": ...,
  "duration_s": ..., "referer": ..., "user_agent": ..., "worker": ...}``.

Requests too malformed to reach the app (a NUL in a header, a line too long) are aiohttp's to
answer; :class:`MalformedRequestFilter` logs them as one line that echoes none of the request.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
import time
from typing import Any, ClassVar

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from ..config import Config

__all__ = [
    "ACCESS_FORMATS",
    "BatchedStreamHandler",
    "JSONAccessLogger",
    "LineAccessLogger",
    "MalformedRequestFilter",
    "NativeAccessLog",
    "access_log_options",
    "batched_access_log",
]

LOGGER = "handle_server.access"
#: Seconds a line may wait for others to be written with it (one write for many under load).
_FLUSH_AFTER = 0.01

#: aiohttp's access log format strings, by name.
ACCESS_FORMATS = {
    "combined": '%a - - %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"',
    "common": '%a - - %t "%r" %s %b',
    "json": "",
}


class JSONAccessLogger(AbstractAccessLogger):
    """Each request as one JSON object. ``log_format`` carries the worker's number ("" for a
    single process)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        entry: dict[str, Any] = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "remote": request.remote,
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": response.body_length,
            "duration_s": round(time, 6),
            "referer": request.headers.get("Referer"),
            "user_agent": request.headers.get("User-Agent"),
        }
        if self.log_format:
            entry["worker"] = int(self.log_format)
        self.logger.info(orjson.dumps(entry).decode())


class LineAccessLogger(AbstractAccessLogger):
    """The ``combined`` and ``common`` lines, byte for byte as aiohttp's ``AccessLogger``
    writes them with ``ACCESS_FORMATS`` (the time the request started, local, with its UTC
    offset), made without its format machinery or a ``LogRecord``: through the batched
    handler ``serve`` gives the access logger. ``log_format`` names the format."""

    #: The last start second seen and its stamp, shared: aiohttp makes a logger a connection.
    _second: ClassVar[int] = -1
    _stamp: ClassVar[str] = ""

    def __init__(self, logger: logging.Logger, log_format: str = "combined") -> None:
        super().__init__(logger, log_format)
        self.combined = log_format == "combined"

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        second = int(_time() - time)
        cls = LineAccessLogger
        if second != cls._second:  # one timestamp a second, not one a request
            cls._stamp = _strftime("[%d/%b/%Y:%H:%M:%S %z]", _localtime(second))
            cls._second = second
        version = request.version
        line = (
            f"{request.remote or '-'} - - {cls._stamp} "
            f'"{request.method} {request.path_qs} HTTP/{version.major}.{version.minor}" '
            f"{response.status} {response.body_length}"
        )
        if self.combined:
            headers = request.headers
            line += f' "{headers.get("Referer", "-")}" "{headers.get("User-Agent", "-")}"'
        _write(self.logger, line)


def _write(logger: logging.Logger, message: str, now: float | None = None) -> None:
    """Straight to the batched handler ``serve`` gives the access logger (the same line for a
    fraction of the cost); through the logger otherwise. ``now``: ``time.time()``, if the
    caller has it."""
    handlers = logger.handlers
    if len(handlers) == 1 and isinstance(handlers[0], BatchedStreamHandler):
        if not logger.filters and not handlers[0].filters:
            handlers[0].write_line(message, now)
            return
    logger.info("%s", message)


#: logging's milliseconds after the second: ",000" to ",999".
_MILLIS = [f",{ms:03d}" for ms in range(1000)]

#: ``LineAccessLogger.log``'s argument ``time`` (aiohttp's name) hides the module.
_time, _strftime, _localtime = time.time, time.strftime, time.localtime


class NativeAccessLog:
    """One line per native request, on the same logger and in the same format as the HTTP
    requests': the "request" is ``HDL-<transport> <operation> <handle>``, the status the
    response code. ``combined``/``common``: ``192.0.2.1 - - [01/Dec/2026:14:00:00 +0000]
    "HDL-TCP resolution CNRI/test-1" 1 223``; ``json``: ``{"time", "remote", "protocol",
    "operation", "handle", "rc", "bytes", "duration_s"}``."""

    def __init__(self, config: Config, worker: int | None = None) -> None:
        self.enabled = config.log.access
        self.json = config.log.access_format == "json"
        self.worker = worker
        self.logger = logging.getLogger(LOGGER)
        self._second, self._stamp = -1, ""

    def log(
        self,
        transport: str,
        client: str | None,
        operation: str,
        handle: str,
        rc: int,
        size: int,
        duration: float,
    ) -> None:
        if not self.enabled or not self.logger.isEnabledFor(logging.INFO):
            return
        if not self.json:
            request = f"HDL-{transport.upper()} {operation} {_printable(handle)}"
            self._write(f'{client or "-"} - - {self._stamped(time.time())} "{request}" {rc} {size}')
            return
        now = datetime.datetime.now(datetime.UTC)
        entry: dict[str, Any] = {
            "time": now.isoformat(timespec="milliseconds"),
            "remote": client,
            "protocol": f"hdl-{transport}",
            "operation": operation,
            "handle": handle,
            "rc": rc,
            "bytes": size,
            "duration_s": round(duration, 6),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        self._write(orjson.dumps(entry).decode())

    def line(
        self, client: str | None, logged: tuple[str, str, str, int, int], tail: str | None
    ) -> str | None:
        """``log`` for an answer ``NativeService.quick`` keeps, whose ``logged`` fields
        (transport, operation, handle, rc, size) come again and again: ``tail``, the part of
        its line after the time, is made once. Returns the tail to give next time."""
        if self.json:
            self.log(logged[0], client, logged[1], logged[2], logged[3], logged[4], 0.0)
            return None
        if not self.enabled or not self.logger.isEnabledFor(logging.INFO):
            return tail
        if tail is None:
            transport, operation, handle, rc, size = logged
            request = f"HDL-{transport.upper()} {operation} {_printable(handle)}"
            tail = f' "{request}" {rc} {size}'
        now = time.time()
        _write(self.logger, f"{client or '-'} - - {self._stamped(now)}{tail}", now)
        return tail

    def _stamped(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # one timestamp a second, not one a request
            self._second = second
            self._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(second))
        return self._stamp

    def _write(self, message: str) -> None:
        _write(self.logger, message)


def _printable(text: str) -> str:
    """A handle as a log shows it: no quotes, spaces or control characters to forge lines."""
    if text.isprintable() and " " not in text and '"' not in text:
        return text  # nearly every handle: checked in C
    return "".join(c if c.isprintable() and c not in ' "' else f"\\x{ord(c):02x}" for c in text)


class BatchedStreamHandler(logging.StreamHandler):
    """A stream handler for the access log that writes the lines of 10 ms together: one
    ``write`` and ``flush`` for many requests under load, the same line for every request.
    Outside a running loop it writes each line as it comes."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._parts = _line_parts("%(message)s", self.terminator)
        self._second, self._stamp = -1, ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # pragma: no cover - logging's own contract
            self.handleError(record)
            return
        self._add(line)

    def _add(self, line: str) -> None:
        """Keep ``line``: written within ``_FLUSH_AFTER`` (at once outside a running loop, or
        when 512 are waiting)."""
        self._lines.append(line)
        if len(self._lines) == 1:
            try:
                asyncio.get_running_loop().call_later(_FLUSH_AFTER, self.flush)
            except RuntimeError:
                self.flush()
        elif len(self._lines) >= 512:
            self.flush()

    def write_line(self, message: str, now: float | None = None) -> None:
        """``message`` as the formatter would show an INFO record of the access logger, made
        without a ``LogRecord`` (the formatter's fields are all ``%(name)s``-style strings:
        ``serve`` sets them). The native interfaces log through here."""
        pre, mid, post = self._parts
        if mid is None:  # no time in the format
            self._add(pre + message + post)
            return
        if now is None:
            now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        self._add(f"{pre}{self._stamp}{_MILLIS[int((now - second) * 1000)]}{mid}{message}{post}")

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        text = fmt._fmt if fmt is not None and fmt._fmt else "%(message)s"
        self._parts = _line_parts(text, self.terminator)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._lines:
                lines, self._lines = self._lines, []
                self.stream.write("".join(lines))
            super().flush()


def _line_parts(fmt: str, terminator: str) -> tuple[str, str | None, str]:
    """``fmt`` (fields ``asctime``, ``levelname``, ``name`` and ``message``, in %-style) cut
    around its time and message, with INFO and the access logger's name put in: a line is
    then ``pre + time + mid + message + post`` (``mid`` is ``None`` when the format shows no
    time: ``pre + message + post``)."""
    fields = {"asctime": "\x00", "levelname": "INFO", "name": LOGGER, "message": "\x01"}
    text = fmt % fields + terminator
    if text.count("\x01") != 1 or text.count("\x00") > 1:
        raise ValueError(f"an access log format shows its time at most once: {fmt!r}")
    before, post = text.split("\x01")
    if "\x00" not in before:
        if "\x00" in post:
            raise ValueError(f"an access log format shows the time before the message: {fmt!r}")
        return before, None, post
    pre, mid = before.split("\x00")
    return pre, mid, post


def batched_access_log(formatter: logging.Formatter) -> None:
    """Give the access logger a ``BatchedStreamHandler`` on stderr with ``formatter`` (its
    lines then stop going through the root logger's handlers)."""
    logger = logging.getLogger(LOGGER)
    handler = BatchedStreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logger.handlers[:] = [handler]
    logger.propagate = False


class MalformedRequestFilter(logging.Filter):
    """On ``aiohttp.server``: a request aiohttp refused as malformed (a 4xx it answers itself)
    is the client's mistake, not the server's, and aiohttp's record of it is an ERROR with a
    traceback that quotes the offending bytes, which may be a credential (a NUL inside an
    ``Authorization`` header). Such a record becomes one INFO line naming the peer and the kind
    of mistake; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            record.msg = "malformed HTTP request from %s refused with %d (%s)"
            record.args = (*(record.args or ("?",))[:1], exc.code, type(exc).__name__)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def access_log_options(config: Config, worker: int | None = None) -> dict[str, Any]:
    """The access-log arguments of ``web.run_app`` for ``config``."""
    if not config.log.access:
        return {"access_log": None}
    logger = logging.getLogger(LOGGER)
    if config.log.access_format != "json":
        return {
            "access_log": logger,
            "access_log_class": LineAccessLogger,
            "access_log_format": config.log.access_format,
        }
    # Lines of JSON alone: a handler of its own that writes only the message.
    batched_access_log(logging.Formatter("%(message)s"))
    return {
        "access_log": logger,
        "access_log_class": JSONAccessLogger,
        "access_log_format": str(worker or ""),
    }
