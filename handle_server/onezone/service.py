"""Onezone (Onedata) shares and their handles: the rules of the Onezone handle API and of the
handle-proxy contract Onezone calls, on top of ``HandleService``.

A share's handle is an ordinary handle record, so it resolves like any other and every write
goes through the Handle rules (permissions, the cache, durability). Its values:

- index 1, ``URL``: the share's public URL (the resolver redirects there);
- index 2, ``ONEDATA/METADATA``: the Dublin Core (or EDM) XML, exactly as given;
- index 3, ``ONEDATA/HANDLE``: the Onezone record (JSON): handleId, handle service, resource,
  metadata prefix, creator, times (handles registered through the proxy contract have none:
  Onezone keeps that record itself);
- index 100, ``HS_ADMIN``: the identity that registered it, with every right on the handle.

A handle's ``handleId`` (and its suffix) is derived from the resource it names, so "one handle
per share" is the store's own uniqueness of handle names, which holds across processes and
nodes; a share registered in two handle services of different prefixes is refused by a lookup
under the other prefixes first. A handle, once deleted, is never given again (a PID names one
thing for ever): a share registered again gets the next id of its line (``handle_id_of``'s
generations), the first that no handle of any service's prefix ever had, as the histories
tell.

Privileges map onto Handle rights: registering needs ADD_HANDLE on the service's prefix handle
(``handle_service_register_handle``, ``oz_handles_create``); viewing the full record needs
READ_VALUE on the handle (``handle_view``), modifying its metadata MODIFY_VALUE
(``handle_update``), deleting it DELETE_HANDLE (``handle_delete``), listing LIST_HANDLES on the
prefix handle (``oz_handles_list``, ``handle_service_list_handles``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from storage import Handle, HandleAlreadyExists, HandleNotFound, HandleValue, handle_key

from ..auth.authenticator import Authenticator
from ..auth.identities import Identity
from ..config import HandleServiceConfig, OnezoneConfig
from ..encoding import AdminPermission, AdminRecord, encode_admin
from ..errors import AuthenticationNeeded, InvalidAdmin
from ..locks import KeyedLocks
from ..service import HandleService
from .metadata import MAX_METADATA_CHARS, METADATA_PREFIXES, MetadataError, check_metadata

__all__ = [
    "DESCRIPTOR_INDEX",
    "DESCRIPTOR_TYPE",
    "METADATA_INDEX",
    "METADATA_TYPE",
    "OnezoneError",
    "OnezoneService",
    "ShareHandle",
    "handle_id_of",
]

log = logging.getLogger(__name__)

URL_INDEX = 1
METADATA_INDEX = 2
DESCRIPTOR_INDEX = 3
ADMIN_INDEX = 100
METADATA_TYPE = "ONEDATA/METADATA"
DESCRIPTOR_TYPE = "ONEDATA/HANDLE"
RESOURCE_TYPES = ("Share",)
P = AdminPermission
#: What the registering identity gets on its handle: everything that applies to a handle.
CREATOR_PERMISSIONS = (
    P.DELETE_HANDLE
    | P.ADD_VALUE
    | P.MODIFY_VALUE
    | P.REMOVE_VALUE
    | P.ADD_ADMIN
    | P.MODIFY_ADMIN
    | P.REMOVE_ADMIN
    | P.READ_VALUE
)
_HANDLE_ID = re.compile(r"[0-9a-f]{32}")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9._~-]{1,255}")


class OnezoneError(Exception):
    """An error in Onezone's own terms: its error ``id`` (``badValueXML``, ``notFound``, ...),
    the ``details`` it carries (``key``, ``limit``, ``allowed``), and what went wrong."""

    def __init__(self, error_id: str, description: str, **details: Any) -> None:
        super().__init__(description)
        self.id = error_id
        self.description = description
        self.details = details


def handle_id_of(resource_type: str, resource_id: str, generation: int = 0) -> str:
    """The handleId (and handle suffix) of a resource: the same resource, the same id; its
    ``generation``-th registration after handles of it were deleted, another."""
    seed = f"{resource_type}:{resource_id}" + (f"#{generation}" if generation else "")
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


#: Registrations of one resource after which registering it again is refused.
_MAX_GENERATIONS = 1000


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ShareHandle:
    """A share's handle as the Onezone API shows it."""

    handle_id: str
    handle: str
    service_id: str
    resource_type: str
    resource_id: str
    metadata_prefix: str
    metadata: str
    timestamp: int
    creator: str
    creation_time: int

    def to_json(self, public_handle_base: str, *, public: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "handleId": self.handle_id,
            "handleServiceId": self.service_id,
            "handle": self.handle,
            "publicHandle": f"{public_handle_base}/{self.handle}",
            "resourceType": self.resource_type,
            "resourceId": self.resource_id,
            "metadataPrefix": self.metadata_prefix,
            "metadata": self.metadata,
            "timestamp": _iso(self.timestamp),
            "creationTime": self.creation_time,
        }
        if not public:
            body["creator"] = {"type": "user", "id": self.creator}
        return body

    def descriptor(self) -> bytes:
        return orjson.dumps(
            {
                "handleId": self.handle_id,
                "handleServiceId": self.service_id,
                "resourceType": self.resource_type,
                "resourceId": self.resource_id,
                "metadataPrefix": self.metadata_prefix,
                "creator": self.creator,
                "creationTime": self.creation_time,
                "timestamp": self.timestamp,
            }
        )

    @classmethod
    def from_record(cls, record: Handle) -> ShareHandle | None:
        """The Onezone record a handle record holds, ``None`` if it holds none (or one that
        was edited beyond recognition through the Handle API)."""
        descriptor = record.value_at(DESCRIPTOR_INDEX)
        metadata = record.value_at(METADATA_INDEX)
        if descriptor is None or descriptor.type != DESCRIPTOR_TYPE:
            return None
        try:
            fields = orjson.loads(descriptor.data)
            text = metadata.data.decode("utf-8") if metadata is not None else ""
            return cls(
                handle_id=str(fields["handleId"]),
                handle=record.handle,
                service_id=str(fields["handleServiceId"]),
                resource_type=str(fields["resourceType"]),
                resource_id=str(fields["resourceId"]),
                metadata_prefix=str(fields["metadataPrefix"]),
                metadata=text,
                timestamp=int(fields["timestamp"]),
                creator=str(fields["creator"]),
                creation_time=int(fields["creationTime"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            log.warning("%s holds an unreadable %s value; ignored", record.handle, DESCRIPTOR_TYPE)
            return None


# -- request fields ----------------------------------------------------------------------------


def _string(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    if key not in body or body[key] is None:
        if required:
            raise OnezoneError("missingRequiredValue", f"Missing required value: {key}.", key=key)
        return None
    value = body[key]
    if not isinstance(value, str):
        raise OnezoneError(
            "badValueString", f'Bad value: provided "{key}" must be a string.', key=key
        )
    return value


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise OnezoneError(
            "badValueNotAllowed",
            f'Bad value: provided "{key}" must be one of: {", ".join(allowed)}.',
            key=key,
            allowed=list(allowed),
        )
    return value


def checked_metadata(text: str, metadata_prefix: str, key: str = "metadata") -> str:
    """``text`` if it is metadata Onezone would accept for ``metadata_prefix``."""
    if len(text) > MAX_METADATA_CHARS:
        raise OnezoneError(
            "badValueTextTooLarge",
            f'Bad value: the text provided in "{key}" cannot be larger than '
            f"{MAX_METADATA_CHARS} characters.",
            key=key,
            limit=MAX_METADATA_CHARS,
        )
    try:
        check_metadata(text, metadata_prefix)
    except MetadataError as exc:
        raise OnezoneError(
            "badValueXML", f'Bad value: provided "{key}" must be a valid XML: {exc}.', key=key
        ) from None
    return text


def body_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise OnezoneError(
            "malformedData",
            "Provided data could not be understood by the server: expected a JSON object.",
        )
    return body


@dataclass(frozen=True, slots=True)
class Registration:
    """A checked ``POST /handles`` body."""

    service: HandleServiceConfig
    resource_type: str
    resource_id: str
    metadata_prefix: str
    metadata: str


def parse_registration(body: Any, config: OnezoneConfig) -> Registration:
    """Check a registration as Onezone does: the handle service exists, the resource is a
    Share, the metadata prefix is known and the metadata is XML of its form, within limits."""
    body = body_object(body)
    service_id = _string(body, "handleServiceId")
    resource_type = _string(body, "resourceType")
    resource_id = _string(body, "resourceId")
    prefix = _string(body, "metadataPrefix", required=False) or "oai_dc"
    metadata = _string(body, "metadata")
    assert service_id is not None and resource_type is not None
    assert resource_id is not None and metadata is not None
    service = config.handle_service(service_id)
    if service is None:
        raise OnezoneError(
            "badValueIdNotFound",
            'Bad value: provided ID ("handleServiceId") does not exist.',
            key="handleServiceId",
        )
    _one_of("resourceType", resource_type, RESOURCE_TYPES)
    if not _RESOURCE_ID.fullmatch(resource_id):
        raise OnezoneError(
            "badValueIdentifier",
            'Bad value: provided "resourceId" is not a valid identifier '
            "(1-255 letters, digits or ._~-).",
            key="resourceId",
        )
    _one_of("metadataPrefix", prefix, METADATA_PREFIXES)
    metadata = checked_metadata(metadata, prefix)
    return Registration(service, resource_type, resource_id, prefix, metadata)


def _url(body: Mapping[str, Any], key: str) -> str:
    url = _string(body, key)
    assert url is not None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[oops": not a URL at all
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.netloc
        or len(url) > 4096
    ):
        raise OnezoneError(
            "badValueString", f'Bad value: provided "{key}" must be an http(s) URL.', key=key
        )
    return url


# -- the service -------------------------------------------------------------------------------


class OnezoneService:
    def __init__(
        self, handles: HandleService, config: OnezoneConfig, authenticator: Authenticator
    ) -> None:
        self.handles = handles
        self.config = config
        self.authenticator = authenticator
        # Registrations of one resource in this process take turns, so that two handle
        # services cannot both take it.
        self._registering = KeyedLocks()

    # -- values ------------------------------------------------------------------------------

    @staticmethod
    def _admin_value(identity: Identity) -> HandleValue:
        admin = AdminRecord(identity.handle, identity.index, CREATOR_PERMISSIONS)
        return HandleValue(index=ADMIN_INDEX, type="HS_ADMIN", data=encode_admin(admin))

    @staticmethod
    def _metadata_value(text: str) -> HandleValue:
        return HandleValue(index=METADATA_INDEX, type=METADATA_TYPE, data=text.encode("utf-8"))

    def share_url(self, resource_id: str) -> str:
        return self.config.share_url_template.replace("{resourceId}", resource_id)

    def public_handle(self, name: str) -> str:
        return f"{self.config.public_handle_base}/{name}"

    # -- the Onezone handle API ----------------------------------------------------------------

    def _prefixes(self) -> list[str]:
        """The prefixes of the handle services, each once."""
        seen: dict[str, str] = {}
        for service in self.config.handle_services:
            seen.setdefault(handle_key(service.prefix), service.prefix)
        return list(seen.values())

    async def _find(self, handle_id: str, *, fresh: bool) -> tuple[ShareHandle, Handle]:
        """The share handle ``handle_id`` and its record (public values only unless
        ``fresh``, which reads the store rather than the cache)."""
        if _HANDLE_ID.fullmatch(handle_id):
            for prefix in self._prefixes():
                name = f"{prefix}/{handle_id}"
                record = await self.handles.read_record(name, fresh=fresh)
                share = ShareHandle.from_record(record) if record is not None else None
                if share is not None and share.handle_id == handle_id:
                    return share, record
        raise OnezoneError("notFound", "The resource could not be found.")

    async def get(
        self, handle_id: str, identity: Identity | None, *, service_id: str | None = None
    ) -> ShareHandle:
        """The full record; the caller needs READ_VALUE on the handle (``handle_view``)."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed")
        share, record = await self._find(handle_id, fresh=True)
        if service_id is not None and share.service_id != service_id:
            raise OnezoneError("notFound", "The resource could not be found.")
        await self.handles.require(identity, record, P.READ_VALUE)
        return share

    async def get_public(self, handle_id: str) -> ShareHandle:
        share, _ = await self._find(handle_id, fresh=False)
        return share

    async def register(self, registration: Registration, identity: Identity | None) -> ShareHandle:
        """Create the handle of a share under its handle service's prefix; one per share."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed")
        r = registration
        async with self._registering(handle_id_of(r.resource_type, r.resource_id)):
            handle_id = await self._unused_id(r)
            name = f"{r.service.prefix}/{handle_id}"
            share, values = self._share_values(r, handle_id, name, identity)
            try:
                await self.handles.create(name, values, overwrite=False, identity=identity)
            except HandleAlreadyExists:
                raise _already_registered(r.resource_id, name) from None
        log.info("registered %s for %s %s by %s", name, r.resource_type, r.resource_id, identity)
        return share

    async def _unused_id(self, r: Registration) -> str:
        """The first id of the resource's line that no handle of any service's prefix ever
        had; ``alreadyExists`` if a handle of the line is registered."""
        for generation in range(_MAX_GENERATIONS):
            handle_id = handle_id_of(r.resource_type, r.resource_id, generation)
            used = False
            for prefix in self._prefixes():
                name = f"{prefix}/{handle_id}"
                record = await self.handles.read_record(name, fresh=True)
                if record is not None and ShareHandle.from_record(record) is not None:
                    raise _already_registered(r.resource_id, record.handle)
                used = used or record is not None or await self.handles.ever_existed(name)
            if not used:
                return handle_id
        raise OnezoneError(
            "badValueNotAllowed",
            f"share {r.resource_id} was registered and deleted too often to register again.",
            key="resourceId",
        )

    def _share_values(
        self, r: Registration, handle_id: str, name: str, identity: Identity
    ) -> tuple[ShareHandle, list[HandleValue]]:
        now = int(self.handles.now())
        share = ShareHandle(
            handle_id=handle_id,
            handle=name,
            service_id=r.service.id,
            resource_type=r.resource_type,
            resource_id=r.resource_id,
            metadata_prefix=r.metadata_prefix,
            metadata=r.metadata,
            timestamp=now,
            creator=str(identity),
            creation_time=now,
        )
        values = [
            HandleValue(index=URL_INDEX, type="URL", data=self.share_url(r.resource_id).encode()),
            self._metadata_value(r.metadata),
            HandleValue(index=DESCRIPTOR_INDEX, type=DESCRIPTOR_TYPE, data=share.descriptor()),
            self._admin_value(identity),
        ]
        return share, values

    async def modify(self, handle_id: str, body: Any, identity: Identity | None) -> None:
        """Replace the metadata (the only field that can change); needs MODIFY_VALUE."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed")
        body = body_object(body)
        if "metadata" not in body:  # Onezone names the missing field first, whatever else
            raise OnezoneError(
                "missingRequiredValue", "Missing required value: metadata.", key="metadata"
            )
        others = sorted(k for k in body if k != "metadata")
        if others:
            raise OnezoneError(
                "badValueNotAllowed",
                f"Only metadata can be modified, not {', '.join(others)}.",
                key=others[0],
                allowed=["metadata"],
            )
        text = _string(body, "metadata")
        assert text is not None
        share, _ = await self._find(handle_id, fresh=True)
        text = checked_metadata(text, share.metadata_prefix)
        updated = dataclasses.replace(share, metadata=text, timestamp=int(self.handles.now()))
        values = [
            self._metadata_value(text),
            HandleValue(index=DESCRIPTOR_INDEX, type=DESCRIPTOR_TYPE, data=updated.descriptor()),
        ]
        try:
            await self.handles.add_values(share.handle, values, overwrite=True, identity=identity)
        except HandleNotFound:
            raise OnezoneError("notFound", "The resource could not be found.") from None

    async def delete(self, handle_id: str, identity: Identity | None) -> None:
        """Delete the share's handle; needs DELETE_HANDLE."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed")
        share, _ = await self._find(handle_id, fresh=True)
        try:
            await self.handles.delete(share.handle, identity=identity)
        except HandleNotFound:
            raise OnezoneError("notFound", "The resource could not be found.") from None
        log.info(
            "deleted %s (%s %s) by %s",
            share.handle,
            share.resource_type,
            share.resource_id,
            identity,
        )

    async def list_ids(
        self, identity: Identity | None, service: HandleServiceConfig | None = None
    ) -> list[str]:
        """The handleIds of one handle service, or of all the caller may list (LIST_HANDLES on
        the prefix handle)."""
        if identity is None:
            raise AuthenticationNeeded(None, "Authentication needed")
        services = [service] if service is not None else list(self.config.handle_services)
        by_prefix: dict[str, set[str]] = {}
        refused: InvalidAdmin | None = None
        for s in services:
            try:
                await self.handles.count_handles(s.prefix, identity)
            except InvalidAdmin as exc:
                if service is not None:
                    raise
                refused = exc
                continue
            by_prefix.setdefault(s.prefix, set()).add(s.id)
        if not by_prefix and refused is not None:
            raise refused
        found = []
        for prefix, ids in by_prefix.items():
            async for batch in self.handles.iter_handles(prefix):
                for name in batch:
                    if not _HANDLE_ID.fullmatch(name.partition("/")[2]):
                        continue
                    record = await self.handles.read_record(name, fresh=True)
                    share = ShareHandle.from_record(record) if record is not None else None
                    if share is not None and share.service_id in ids:
                        found.append(share.handle_id)
        return found

    def services(self) -> tuple[HandleServiceConfig, ...]:
        return self.config.handle_services

    def service(self, service_id: str) -> HandleServiceConfig:
        found = self.config.handle_service(service_id)
        if found is None:
            raise OnezoneError("notFound", "The resource could not be found.")
        return found

    # -- the handle-proxy contract ----------------------------------------------------------------

    async def _proxy_identity(
        self, properties: Mapping[str, Any], header: str | None, client: str | None
    ) -> Identity:
        """The identity the service properties' ``username``/``password`` prove (Onezone sends
        no Authorization header); an ``Authorization`` header is taken when they are absent."""
        user, password = properties.get("username"), properties.get("password")
        if isinstance(user, str) and user and isinstance(password, str):
            return await self.authenticator.check_secret(user, password.encode(), client=client)
        identity = await self.authenticator.authenticate(header, client=client)
        if identity is None:
            raise AuthenticationNeeded(
                None, "Give serviceProperties.username (index:handle) and password"
            )
        return identity

    @staticmethod
    def _properties(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
        properties = body_object(body)
        prefix = _string(properties, "prefix")
        if not prefix:
            raise OnezoneError(
                "missingRequiredValue",
                "Missing required value: serviceProperties.prefix.",
                key="serviceProperties.prefix",
            )
        return properties, prefix

    @staticmethod
    def _name(hndl: str | None, prefix: str) -> str:
        """``prefix/suffix`` from the ``hndl`` Onezone sends: the suffix (PID services),
        ``prefix/suffix`` (DOI services), or a whole public handle (modify, and older Onezones
        on delete), in which the suffix follows the first ``prefix/``."""
        if not hndl:
            raise OnezoneError("missingRequiredValue", "Missing required value: hndl.", key="hndl")
        marker = f"{prefix}/"
        at = hndl.upper().find(marker.upper())
        if at != -1 and (at == 0 or "://" in hndl[:at]):
            suffix = hndl[at + len(marker) :]
        else:
            suffix = hndl
        if not suffix:
            raise OnezoneError(
                "badValueIdentifier", 'Bad value: provided "hndl" has no suffix.', key="hndl"
            )
        return f"{prefix}/{suffix}"

    def _proxy_values(self, body: Mapping[str, Any], *, url_required: bool) -> list[HandleValue]:
        values = []
        if url_required or "url" in body:
            values.append(HandleValue(index=URL_INDEX, type="URL", data=_url(body, "url").encode()))
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise OnezoneError(
                    "badValueJSON",
                    'Bad value: provided "metadata" must be a JSON object {"onedata_dc": ...}.',
                    key="metadata",
                )
            text = _string(metadata, "onedata_dc", required=False)
            if text is not None:
                values.append(self._metadata_value(checked_metadata(text, "oai_dc", "onedata_dc")))
        return values

    async def _proxy_request(
        self, hndl: str | None, body: Any, header: str | None, client: str | None
    ) -> tuple[Mapping[str, Any], Identity, str]:
        """A PUT or PATCH body, who sends it (from its serviceProperties), and the handle."""
        body = body_object(body)
        if "serviceProperties" not in body:
            raise OnezoneError(
                "missingRequiredValue",
                "Missing required value: serviceProperties.",
                key="serviceProperties",
            )
        properties, prefix = self._properties(body["serviceProperties"])
        identity = await self._proxy_identity(properties, header, client)
        return body, identity, self._name(hndl, prefix)

    async def proxy_register(
        self, hndl: str | None, body: Any, *, header: str | None, client: str | None
    ) -> str:
        """``PUT {proxy}/handle?hndl=``: create the handle; its public URL."""
        body, identity, name = await self._proxy_request(hndl, body, header, client)
        values = [*self._proxy_values(body, url_required=True), self._admin_value(identity)]
        try:
            await self.handles.create(name, values, overwrite=False, identity=identity)
        except HandleAlreadyExists:
            raise OnezoneError("alreadyExists", f"The handle {name} already exists.") from None
        log.info("registered %s through the handle-proxy contract by %s", name, identity)
        return self.public_handle(name)

    async def proxy_modify(
        self, hndl: str | None, body: Any, *, header: str | None, client: str | None
    ) -> None:
        """``PATCH {proxy}/handle?hndl=``: replace the URL and metadata given."""
        body, identity, name = await self._proxy_request(hndl, body, header, client)
        values = self._proxy_values(body, url_required=False)
        if not values:
            return
        try:
            await self.handles.add_values(name, values, overwrite=True, identity=identity)
        except HandleNotFound:
            raise OnezoneError("notFound", f"The handle {name} does not exist.") from None

    async def proxy_unregister(
        self, hndl: str | None, body: Any, *, header: str | None, client: str | None
    ) -> str:
        """``DELETE {proxy}/handle?hndl=`` with the service properties as the body."""
        properties, prefix = self._properties(body)
        identity = await self._proxy_identity(properties, header, client)
        name = self._name(hndl, prefix)
        try:
            await self.handles.delete(name, identity=identity)
        except HandleNotFound:
            raise OnezoneError("notFound", f"The handle {name} does not exist.") from None
        log.info("deleted %s through the handle-proxy contract by %s", name, identity)
        return name


def _already_registered(resource_id: str, name: str) -> OnezoneError:
    return OnezoneError(
        "alreadyExists", f"The resource already exists: share {resource_id} has the handle {name}."
    )
