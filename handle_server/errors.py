"""Request-level errors: what a request got wrong, or may not do. The Handle-domain errors
(not found, already exists, ...) live in ``storage.errors``. ``status_and_code`` maps both to
the HTTP status and the Handle response code the reference answers them with: the HTTP API
answers with both (``middlewares.py``), the native protocol with the response code."""

from __future__ import annotations

import math

from storage import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidData,
    SearchTimeout,
    StoreUnavailable,
    ValueAlreadyExists,
    ValuesNotFound,
)

__all__ = [
    "ERROR_TABLE",
    "AuthenticationFailed",
    "AuthenticationNeeded",
    "BodyTooLarge",
    "ClientDisconnected",
    "InsufficientPermissions",
    "InvalidAdmin",
    "InvalidHandle",
    "InvalidValue",
    "PreconditionFailed",
    "ProtocolError",
    "RecordTooLarge",
    "RequestTimeout",
    "ServerNotResponsible",
    "ServerTooBusy",
    "TooManyFailures",
    "TryAgainLater",
    "UpstreamUnavailable",
    "client_message",
    "status_and_code",
]


class ProtocolError(HandleError):
    """The request is malformed: bad JSON, wrong body shape, bad parameter."""


class BodyTooLarge(ProtocolError):
    pass


class RequestTimeout(ProtocolError):
    """The client did not send its request body within ``[server] body_timeout``."""


class ClientDisconnected(ProtocolError):
    """The client closed its connection before its request body was in: nobody hears the
    answer (logged with 499, as front ends log it)."""


class InvalidHandle(HandleError):
    """The handle is empty or not a handle."""


class InvalidValue(HandleError):
    """A handle value breaks a rule (index not positive, ...)."""


class RecordTooLarge(InvalidValue):
    """A write would make a record larger than ``[handle] max_record_bytes``."""


class PreconditionFailed(HandleError):
    """A conditional write (``If-Match``, ``If-None-Match``) met a record that fails its
    condition: nothing was changed."""


class ServerNotResponsible(HandleError):
    """The handle's prefix is not homed on this server."""


class AuthenticationNeeded(HandleError):
    """The request needs credentials and has none."""


class AuthenticationFailed(HandleError):
    """Credentials were given and are wrong, malformed or of an unknown identity."""


class InvalidAdmin(HandleError):
    """The identity is authenticated but is no administrator of the handle."""


class InsufficientPermissions(HandleError):
    """The identity may not do this to these values."""


class UpstreamUnavailable(HandleError):
    """In global mode: no server of the site responsible for a handle answered in time."""


class TryAgainLater(HandleError):
    """A refusal that ends by itself: answered with ``Retry-After`` (whole seconds, at least 1)."""

    def __init__(self, handle: str | None, message: str, *, retry_after: float) -> None:
        super().__init__(handle, message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class TooManyFailures(TryAgainLater):
    """Too many failed authentications for this identity or from this client address."""


class ServerTooBusy(TryAgainLater):
    """More requests at once than ``[server] max_concurrent_requests``."""


RC_ERROR = 2
RC_PROTOCOL_ERROR = 4

#: exception class -> (HTTP status, responseCode). Looked up along the class's MRO.
ERROR_TABLE: dict[type[HandleError], tuple[int, int]] = {
    BodyTooLarge: (413, RC_PROTOCOL_ERROR),
    RequestTimeout: (408, RC_PROTOCOL_ERROR),
    ClientDisconnected: (499, RC_PROTOCOL_ERROR),  # nginx's "client closed request"
    ProtocolError: (400, RC_PROTOCOL_ERROR),
    InvalidData: (400, RC_PROTOCOL_ERROR),
    StoreUnavailable: (503, 3),  # RC_SERVER_TOO_BUSY
    SearchTimeout: (503, 3),
    HandleNotFound: (404, 100),
    HandleAlreadyExists: (409, 101),
    InvalidHandle: (400, 102),
    ValuesNotFound: (400, 200),  # a GET that matches nothing is a 200 answer, not an error
    ValueAlreadyExists: (409, 201),
    InvalidValue: (400, 202),
    RecordTooLarge: (413, 202),
    ServerNotResponsible: (400, 301),
    InvalidAdmin: (403, 400),
    InsufficientPermissions: (403, 401),
    AuthenticationNeeded: (401, 402),
    AuthenticationFailed: (401, 403),  # the reference answers a wrong secret with 401 too
    TooManyFailures: (429, 3),  # RC_SERVER_TOO_BUSY; the reference has no throttling
    ServerTooBusy: (503, 3),  # RC_SERVER_TOO_BUSY
    UpstreamUnavailable: (504, RC_ERROR),
    PreconditionFailed: (412, RC_ERROR),  # the Handle protocol has no code of its own for it
}


def status_and_code(exc: HandleError) -> tuple[int, int]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500, RC_ERROR


#: What a client is told of a store failure; the store's own words (paths, server names, the
#: driver's message) go to the log only.
STORE_UNAVAILABLE = "The handle store is unavailable; try again shortly"


def client_message(exc: HandleError) -> str:
    """What a client is told of ``exc``."""
    return STORE_UNAVAILABLE if isinstance(exc, StoreUnavailable) else exc.message
