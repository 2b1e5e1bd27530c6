"""Request-level errors: what a request got wrong, or may not do. The Handle-domain errors
(not found, already exists, ...) live in ``storage.errors``; ``middlewares.py`` maps both to
HTTP statuses and Handle response codes."""

from __future__ import annotations

import math

from storage import HandleError

__all__ = [
    "AuthenticationFailed",
    "AuthenticationNeeded",
    "BodyTooLarge",
    "ClientDisconnected",
    "InsufficientPermissions",
    "InvalidAdmin",
    "InvalidHandle",
    "InvalidValue",
    "ProtocolError",
    "RecordTooLarge",
    "RequestTimeout",
    "ServerNotResponsible",
    "ServerTooBusy",
    "TooManyFailures",
    "TryAgainLater",
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
