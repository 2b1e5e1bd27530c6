"""The OpenAPI 3.1 description of this server's HTTP interface (served by ``docs.py`` as
``GET /api/openapi.json`` and as the page ``GET /api/docs``).

One description for everything that reads it: the docs page, the tests that check real answers
against it, and generated-input testing (schemathesis)."""

from __future__ import annotations

from typing import Any

from storage import OPERATIONS

from .. import __version__
from ..config import OnezoneConfig

__all__ = ["describe"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str | dict | None = None, **headers: str) -> dict:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        body = _ref(schema) if isinstance(schema, str) else schema
        out["content"] = {_JSON: {"schema": body}}
    if headers:
        out["headers"] = {
            k: {"schema": {"type": "string"}, "description": v} for k, v in headers.items()
        }
    return out


def _error(description: str) -> dict:
    return _answer(description, "Error")


def _query(name: str, description: str, schema: dict, *, repeat: bool = False) -> dict:
    if repeat:
        schema = {"type": "array", "items": schema}
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema,
        "style": "form",
        "explode": True,
    }


_BOOL = {"type": "string", "enum": ["true", "false", "yes", "no", "1", "0", ""]}
_HANDLE = {
    "name": "handle",
    "in": "path",
    "required": True,
    "description": "prefix/suffix, percent-encoded where needed (the / may be %2F)",
    "schema": {"type": "string", "minLength": 1},
}
_AUTH_ERRORS = {
    "401": _error("Credentials wrong or malformed (403), or needed (402): responseCode 402/403"),
    "429": _answer(
        "Too many failed authentications from this address or for this identity",
        "Error",
        **{"Retry-After": "seconds until it may try again"},
    ),
    "503": _error("The store is unreachable: responseCode 3"),
}


#: The fields of a version, in a history (``Version``) and alone (``RecordVersion``).
_VERSION_FIELDS: dict[str, Any] = {
    "version": {"type": "integer", "minimum": 1},
    "timestamp": {"type": "string"},
    "by": {"type": ["string", "null"]},
    "operation": {"type": "string", "enum": list(OPERATIONS)},
    "values": {"type": "array", "items": _ref("Value")},
}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["responseCode"],
        "properties": {
            "responseCode": {"type": "integer", "description": "the Handle protocol's code"},
            "handle": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "Reference": {
        "type": "object",
        "required": ["handle", "index"],
        "properties": {"handle": {"type": "string"}, "index": {"type": "integer"}},
    },
    "Data": {
        "type": "object",
        "required": ["format", "value"],
        "properties": {
            "format": {"type": "string", "enum": ["string", "base64", "hex", "admin", "vlist"]},
            "value": {},
        },
    },
    "Value": {
        "type": "object",
        "required": ["index", "type", "data", "ttl", "timestamp"],
        "properties": {
            "index": {"type": "integer", "minimum": 1},
            "type": {"type": "string"},
            "data": _ref("Data"),
            "ttl": {
                "description": "seconds to cache, or the moment it expires (ISO 8601)",
                "oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}],
            },
            "timestamp": {"type": "string", "format": "date-time"},
            "permissions": {
                "type": "string",
                "pattern": "^[01]{4}$",
                "description": "admin read, admin write, public read, public write (default 1110)",
            },
            "references": {"type": "array", "items": _ref("Reference")},
        },
    },
    "ValueInput": {
        "type": "object",
        "required": ["index", "type", "data"],
        "description": "A value to store. data may be a bare string; other fields the client "
        "read back (timestamp, ...) are accepted.",
        "properties": {
            "index": {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+$"}]},
            "type": {"type": "string"},
            "data": {"oneOf": [{"type": "string"}, _ref("Data")]},
            "ttl": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "permissions": {"type": "string", "pattern": "^[01]{4}$"},
            "references": {"type": "array", "items": _ref("Reference")},
        },
    },
    "Record": {
        "type": "object",
        "required": ["responseCode", "handle", "values"],
        "properties": {
            "responseCode": {"type": "integer", "enum": [1, 200]},
            "handle": {"type": "string"},
            "values": {"type": "array", "items": _ref("Value")},
        },
    },
    "Done": {
        "type": "object",
        "required": ["responseCode", "handle"],
        "properties": {
            "responseCode": {"type": "integer", "const": 1},
            "handle": {"type": "string"},
        },
    },
    "BatchOperation": {
        "type": "object",
        "required": ["op", "handle"],
        "properties": {
            "op": {"type": "string", "enum": ["put", "delete"]},
            "handle": {"type": "string"},
            "values": {"type": "array", "items": _ref("ValueInput")},
            "index": {
                "type": "array",
                "items": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            },
            "overwrite": {"type": "boolean"},
            "mintNewSuffix": {"type": "boolean"},
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["handle", "status", "responseCode"],
        "properties": {
            "handle": {"type": ["string", "null"]},
            "status": {"type": "integer"},
            "responseCode": {"type": "integer"},
            "message": {"type": "string"},
        },
    },
    "BatchResults": {
        "type": "object",
        "required": ["responseCode", "results"],
        "properties": {
            "responseCode": {"type": "integer"},
            "message": {"type": "string"},
            "results": {"type": "array", "items": _ref("BatchResult")},
        },
    },
    "Version": {
        "type": "object",
        "required": ["version", "timestamp", "by", "operation", "values"],
        "properties": _VERSION_FIELDS,
    },
    "History": {
        "type": "object",
        "required": ["responseCode", "handle", "totalCount", "versions"],
        "properties": {
            "responseCode": {"type": "integer", "const": 1},
            "handle": {"type": "string"},
            "totalCount": {"type": "integer"},
            "page": {"type": "integer"},
            "pageSize": {"type": "integer"},
            "versions": {"type": "array", "items": _ref("Version")},
        },
    },
    "RecordVersion": {
        "type": "object",
        "required": ["responseCode", "handle", "version", "operation", "values"],
        "properties": {
            "responseCode": {"type": "integer", "enum": [1, 200]},
            "handle": {"type": "string"},
            **_VERSION_FIELDS,
        },
    },
    "Listing": {
        "type": "object",
        "required": ["responseCode", "prefix", "totalCount", "handles"],
        "properties": {
            "responseCode": {"type": "integer", "const": 1},
            "prefix": {"type": "string"},
            "totalCount": {"type": "string", "pattern": "^[0-9]+$"},
            "page": {"type": "integer"},
            "pageSize": {"type": "integer"},
            "handles": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Session": {
        "type": "object",
        "required": ["authenticated"],
        "properties": {
            "sessionId": {"type": "string"},
            "nonce": {"type": "string", "contentEncoding": "base64"},
            "authenticated": {"type": "boolean"},
            "id": {"type": "string", "description": "the identity proved, index:handle"},
            "keyDerivation": {
                "type": "object",
                "required": ["alg", "salt", "iterations"],
                "properties": {
                    "alg": {"type": "string", "const": "PBKDF2-HMAC-SHA256"},
                    "salt": {"type": "string"},
                    "iterations": {"type": "integer"},
                },
            },
            "error": {"type": "string"},
        },
    },
    "OnezoneError": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["id", "description"],
                "properties": {
                    "id": {"type": "string", "description": "e.g. badValueIdNotFound, notFound"},
                    "description": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "OnezoneRegistration": {
        "type": "object",
        "required": ["handleServiceId", "resourceType", "resourceId", "metadata"],
        "properties": {
            "handleServiceId": {"type": "string"},
            "resourceType": {"type": "string", "enum": ["Share"]},
            "resourceId": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,255}$"},
            "metadataPrefix": {"type": "string", "enum": ["oai_dc", "edm"]},
            "metadata": {"type": "string", "description": "XML of the metadata prefix's form"},
        },
    },
    "OnezoneHandle": {
        "type": "object",
        "required": [
            "handleId",
            "handleServiceId",
            "handle",
            "publicHandle",
            "resourceType",
            "resourceId",
            "metadataPrefix",
            "metadata",
            "timestamp",
            "creationTime",
        ],
        "properties": {
            "handleId": {"type": "string"},
            "handleServiceId": {"type": "string"},
            "handle": {"type": "string", "description": "prefix/suffix"},
            "publicHandle": {"type": "string", "description": "the handle as a resolver URL"},
            "resourceType": {"type": "string"},
            "resourceId": {"type": "string"},
            "metadataPrefix": {"type": "string"},
            "metadata": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "creationTime": {"type": "integer"},
            "creator": {
                "type": "object",
                "description": "absent from the public view",
                "properties": {"type": {"type": "string"}, "id": {"type": "string"}},
            },
        },
    },
    "OnezoneHandleIds": {
        "type": "object",
        "required": ["handles"],
        "properties": {"handles": {"type": "array", "items": {"type": "string"}}},
    },
    "OnezoneHandleService": {
        "type": "object",
        "required": ["handleServiceId", "name"],
        "properties": {
            "handleServiceId": {"type": "string"},
            "name": {"type": "string"},
            "serviceProperties": {
                "type": "object",
                "description": "absent from the public view",
                "properties": {"type": {"type": "string"}, "prefix": {"type": "string"}},
            },
        },
    },
    "ProxyRequest": {
        "type": "object",
        "required": ["serviceProperties"],
        "description": "What Onezone sends its handle proxy: the handle service's properties "
        "(their username, index:handle, and password prove who registers), the share's URL "
        "and its Dublin Core metadata.",
        "properties": {
            "serviceProperties": {
                "type": "object",
                "required": ["prefix"],
                "properties": {
                    "prefix": {"type": "string"},
                    "username": {"type": "string"},
                    "password": {"type": "string"},
                },
            },
            "url": {"type": "string", "format": "uri"},
            "metadata": {
                "type": "object",
                "properties": {"onedata_dc": {"type": "string"}},
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "store": {"type": "string"},
        },
    },
}

_READ_PARAMS = [
    _query("index", "only the values at these indexes", {"type": "integer"}, repeat=True),
    _query(
        "type",
        "only values of these types; a type ending in . takes its subtypes",
        {"type": "string"},
        repeat=True,
    ),
    _query("auth", "read the store, not the cache", _BOOL),
    _query("publicOnly", "only public values (default: true without credentials)", _BOOL),
    _query(
        "version",
        "the record as this version of its history left it (READ_VALUE needed; not with "
        "index, type, auth or publicOnly)",
        {"type": "integer", "minimum": 1},
    ),
]


#: Conditional writes: decided against the record the write changes, as the writer reads it.
_CONDITIONS = [
    {
        "name": "If-Match",
        "in": "header",
        "description": "apply only if the record has one of these ETags (those of the "
        "caller's own unfiltered read; * : any record)",
        "schema": {"type": "string"},
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "description": "* : apply only if there is no record (create only); ETags: only if "
        "the record has none of them",
        "schema": {"type": "string"},
    },
]


def _handles_paths() -> dict[str, Any]:
    handle_item = {
        "parameters": [_HANDLE],
        "get": {
            "summary": "Resolve a handle",
            "operationId": "getHandle",
            "parameters": _READ_PARAMS,
            "responses": {
                "200": _answer(
                    "The record (responseCode 1), or 200 when nothing matched; with version=, "
                    "the record as that version left it",
                    {"anyOf": [_ref("Record"), _ref("RecordVersion")]},
                ),
                "304": {"description": "Not modified (If-None-Match)"},
                "400": _error("Not a handle, or a prefix not homed here (301)"),
                "404": _error("No such handle: responseCode 100"),
                **_AUTH_ERRORS,
            },
        },
        "put": {
            "summary": "Create or replace a handle, mint one, or add/replace values",
            "operationId": "putHandle",
            "parameters": [
                _query(
                    "index",
                    "add or replace only these values (or various)",
                    {"type": "string"},
                    repeat=True,
                ),
                _query("overwrite", "false: refuse to replace what exists (409)", _BOOL),
                _query("mintNewSuffix", "true: the path is a prefix or stem; mint a suffix", _BOOL),
                *_CONDITIONS,
            ],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "required": ["values"],
                                    "properties": {
                                        "handle": {"type": "string"},
                                        "values": {"type": "array", "items": _ref("ValueInput")},
                                    },
                                },
                                {"type": "array", "items": _ref("ValueInput")},
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": _answer("Replaced", "Done"),
                "201": _answer("Created", "Done"),
                "400": _error("Bad input: responseCode 4, 102, 202 or 301"),
                "403": _error("Not permitted: responseCode 400 or 401"),
                "409": _error("Exists (101), or a value index exists (201)"),
                "412": _error("If-Match or If-None-Match does not hold: responseCode 2"),
                "413": _error("Body too large"),
                "415": _error("Not application/json"),
                **_AUTH_ERRORS,
            },
            "security": [{"basic": []}, {"handleSession": []}],
        },
        "delete": {
            "summary": "Delete a handle, or the values at ?index=",
            "operationId": "deleteHandle",
            "parameters": [
                _query("index", "delete only these values", {"type": "integer"}, repeat=True),
                *_CONDITIONS,
            ],
            "responses": {
                "200": _answer("Deleted", "Done"),
                "400": _error("Bad input, or no value at an index (200)"),
                "403": _error("Not permitted"),
                "404": _error("No such handle: responseCode 100"),
                "412": _error("If-Match or If-None-Match does not hold: responseCode 2"),
                **_AUTH_ERRORS,
            },
            "security": [{"basic": []}, {"handleSession": []}],
        },
    }
    listing = {
        "get": {
            "summary": "List the handles under a prefix",
            "operationId": "listHandles",
            "parameters": [
                {**_query("prefix", "TEST or 0.NA/TEST", {"type": "string"}), "required": True},
                _query("page", "page number, from 0 (with pageSize)", {"type": "integer"}),
                _query("pageSize", "handles per page", {"type": "integer"}),
            ],
            "responses": {
                "200": _answer("The handles, by name", "Listing"),
                "400": _error("Bad prefix, or not homed here"),
                "403": _error("Listing needs the prefix's list permission"),
                **_AUTH_ERRORS,
            },
            "security": [{"basic": []}, {"handleSession": []}],
        }
    }
    purge_one = {
        "parameters": [_HANDLE],
        "delete": {
            "summary": "Purge one handle's cached record, in every process (for [[admins]])",
            "description": "The handle may be homed here or, in global mode, elsewhere: the "
            "next resolution reads it from the store or its site again.",
            "operationId": "purgeCachedHandle",
            "responses": {
                "200": _answer("Forgotten", "Done"),
                "400": _error("Bad handle"),
                "403": _error("Not among this server's [[admins]]: responseCode 400"),
                **_AUTH_ERRORS,
            },
            "security": [{"basic": []}, {"handleSession": []}],
        },
    }
    purge_all = {
        "delete": {
            "summary": "Purge every cached record, and the remote prefixes' sites (for [[admins]])",
            "operationId": "purgeCache",
            "responses": {
                "200": _answer(
                    "Forgotten",
                    {
                        "type": "object",
                        "required": ["responseCode"],
                        "properties": {"responseCode": {"type": "integer", "const": 1}},
                    },
                ),
                "403": _error("Not among this server's [[admins]]: responseCode 400"),
                **_AUTH_ERRORS,
            },
            "security": [{"basic": []}, {"handleSession": []}],
        }
    }
    return {
        "/api/handles": listing,
        "/api/handles/{handle}": handle_item,
        "/api/cache": purge_all,
        "/api/cache/{handle}": purge_one,
    }


def _batch_paths() -> dict[str, Any]:
    batch = {
        "summary": "Many writes in one request",
        "description": "Each operation is the single PUT or DELETE of /api/handles/{handle}, "
        "with its rules, permissions and limits, applied in order (each sees the ones before "
        "it). JSON: answered once, a result per operation; atomic: all or none (the answer "
        "is then the first refusal's status, and the others' results are 424). NDJSON (one "
        "operation a line): results stream back a line each, in order, as groups of "
        "[batch] in_flight operations commit.",
        "operationId": "postBatch",
        "requestBody": {
            "required": True,
            "content": {
                _JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["operations"],
                        "properties": {
                            "operations": {
                                "type": "array",
                                # Not atomic, an operation that is not a BatchOperation
                                # fails alone: the batch takes any items.
                                "items": {
                                    "anyOf": [
                                        _ref("BatchOperation"),
                                        {
                                            "description": "anything else: that operation "
                                            "alone fails (400, responseCode 4)"
                                        },
                                    ]
                                },
                            },
                            "atomic": {"type": "boolean"},
                        },
                    }
                },
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": "one BatchOperation (JSON) a line",
                    }
                },
            },
        },
        "responses": {
            "200": {
                "description": "Every operation's result, in order (JSON), or a stream of "
                "them (NDJSON, a BatchResult a line)",
                "content": {
                    _JSON: {"schema": _ref("BatchResults")},
                    "application/x-ndjson": {"schema": _ref("BatchResult")},
                },
            },
            "400": _answer(
                "A malformed batch (responseCode 4), or an atomic batch refused by an "
                "operation's own 400",
                {"anyOf": [_ref("Error"), _ref("BatchResults")]},
            ),
            "403": _answer("An atomic batch refused: not permitted", "BatchResults"),
            "404": _answer("An atomic batch refused: no such handle", "BatchResults"),
            "409": _answer("An atomic batch refused: exists", "BatchResults"),
            "413": _answer(
                "More than [batch] max_operations, or a body over max_body_bytes; or an atomic "
                "batch refused by an operation's own 413",
                {"anyOf": [_ref("Error"), _ref("BatchResults")]},
            ),
            **_AUTH_ERRORS,
        },
        "security": [{"basic": []}, {"handleSession": []}],
    }
    return {"/api/batch": {"post": batch}}


def _history_paths() -> dict[str, Any]:
    get = {
        "summary": "The history of a handle's record: every version, oldest first",
        "description": "For identities holding READ_VALUE on the record (on its last record, "
        "if it was deleted). Values readable by no one are left out; secret keys are "
        "redacted. A deleted handle keeps its history.",
        "operationId": "getHistory",
        "parameters": [
            _query("page", "page number, from 0 (with pageSize)", {"type": "integer"}),
            _query("pageSize", "versions per page", {"type": "integer"}),
        ],
        "responses": {
            "200": _answer("The versions", "History"),
            "400": _error("Not a handle, a prefix not homed here (301), a bad option"),
            "403": _error("Without READ_VALUE on the record: responseCode 400"),
            "404": _error("No such handle, now or ever: responseCode 100"),
            **_AUTH_ERRORS,
        },
        "security": [{"basic": []}, {"handleSession": []}],
    }
    return {"/api/history/{handle}": {"parameters": [_HANDLE], "get": get}}


def _session_paths() -> dict[str, Any]:
    session = _answer("The session", "Session")
    failed = _answer("Authentication failed in this session (see error)", "Session")
    none = _answer("No open session with that id", "Session")
    this = {
        "summary": "Look at the session, or prove an identity in it",
        "parameters": [_query("id", "an identity, to get its keyDerivation", {"type": "string"})],
        "responses": {"200": session, "400": _error("Malformed"), "401": failed, "403": none},
    }
    return {
        "/api/sessions": {
            "post": {
                "summary": "Open a session (Basic credentials authenticate it at once)",
                "operationId": "openSession",
                "responses": {
                    "201": _answer("Opened", "Session", Location="/api/sessions/this"),
                    "400": _error("Malformed"),
                    "401": failed,
                },
            }
        },
        "/api/sessions/this": {
            "get": {**this, "operationId": "getSession"},
            "put": {**this, "operationId": "proveInSession"},
            "post": {**this, "operationId": "proveInSessionPost"},
            "delete": {
                "summary": "End the session",
                "operationId": "endSession",
                "responses": {"204": {"description": "Ended"}, "403": none},
            },
        },
    }


def _other_paths() -> dict[str, Any]:
    search = {
        "get": {
            "summary": "Reverse lookup: handles whose values match TYPE=pattern (any type)",
            "description": "Every query parameter other than prefix, limit and page is a type "
            "and a pattern (* is the wildcard). One pattern must hold 3 characters in a row "
            "other than *. Private values count for the prefix's configured admins only.",
            "operationId": "searchHandles",
            "parameters": [
                _query("URL", "a pattern for URL values, e.g. *example.org*", {"type": "string"}),
                _query("prefix", "only handles under this prefix", {"type": "string"}),
                _query(
                    "limit",
                    "handles per page (default 1000)",
                    {"type": "integer", "minimum": 1, "maximum": 10000},
                ),
                _query("page", "page number, from 0", {"type": "integer", "minimum": 0}),
            ],
            "responses": {
                "200": _answer("Handle names", {"type": "array", "items": {"type": "string"}}),
                "400": _error("No condition, a pattern the index cannot find, a bad option"),
                **_AUTH_ERRORS,
            },
        }
    }
    resolver = {
        "get": {
            "summary": "The resolver: redirect to the handle's URL, or show its page",
            "operationId": "resolve",
            "parameters": [
                {**_HANDLE, "description": "prefix/suffix"},
                _query("noredirect", "show the values instead of redirecting", {"type": "string"}),
                _query("urlappend", "appended to the URL", {"type": "string"}),
                _query(
                    "locatt", "10320/loc: keep locations with this attribute", {"type": "string"}
                ),
            ],
            "responses": {
                "200": {"description": "An HTML page (or JSON for Accept: application/json)"},
                **{
                    status: {
                        "description": "To the chosen URL (302 unless the location's http_sc "
                        "asks for another)",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    }
                    for status in ("301", "302", "303", "307", "308")
                },
                "400": {"description": "Not a handle name, or a bad option (HTML page, or JSON)"},
                "404": {"description": "No such handle (HTML page, or JSON)"},
                "503": {"description": "The store is unreachable (HTML page, or JSON)"},
            },
        }
    }
    health = _answer("Up", "Health")
    return {
        "/hrls/handles/": search,
        "/healthz": {
            "get": {"summary": "Liveness", "operationId": "healthz", "responses": {"200": health}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the store answers",
                "operationId": "readyz",
                "responses": {"200": health, "503": _answer("The store does not answer", "Health")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "The text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/{handle}": resolver,
    }


def _onezone_error(description: str) -> dict:
    return _answer(description, "OnezoneError")


_ONEZONE_AUTH = {
    "401": _onezone_error("No credentials, or wrong ones: unauthorized"),
    "403": _onezone_error("The identity lacks the Handle right it needs: forbidden"),
    "429": _onezone_error("Too many failed authentications: tooManyRequests"),
    "503": _onezone_error("The store is unreachable: serviceUnavailable"),
}


def _onezone_paths(api: str, proxy: str) -> dict[str, Any]:
    """The Onezone handle API at ``api`` and the handle-proxy contract at ``proxy`` (either
    "" when turned off). Their errors are Onezone's shape, never the Handle API's."""
    paths: dict[str, Any] = {}
    security = [{"basic": []}, {"handleSession": []}]
    hid = {"name": "hid", "in": "path", "required": True, "schema": {"type": "string"}}
    sid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    handle = _answer("The handle resource", "OnezoneHandle")
    missing = _onezone_error("No such handle or handle service: notFound")
    ids = _answer("handleIds", "OnezoneHandleIds")
    if api:
        register = {
            "summary": "Onezone: register a handle for a share (DC or EDM metadata)",
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": _ref("OnezoneRegistration")}},
            },
            "responses": {
                "201": {
                    "description": "Registered; Location names the new handle resource",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                "400": _onezone_error("A bad or missing value (badValue..., missingRequiredValue)"),
                "409": _onezone_error("The share has a handle already: alreadyExists"),
                **_ONEZONE_AUTH,
            },
            "security": security,
        }
        read = {"responses": {"200": handle, "404": missing, **_ONEZONE_AUTH}, "security": security}
        paths[f"{api}/handles"] = {
            "post": {**register, "operationId": "onezoneRegister"},
            "get": {
                "summary": "Onezone: the handleIds of the handle services the caller may list",
                "operationId": "onezoneListHandles",
                "responses": {"200": ids, **_ONEZONE_AUTH},
                "security": security,
            },
        }
        paths[f"{api}/user/handles"] = {"post": {**register, "operationId": "onezoneRegisterUser"}}
        paths[f"{api}/handles/{{hid}}"] = {
            "parameters": [hid],
            "get": {**read, "summary": "Onezone: a handle resource", "operationId": "onezoneGet"},
            "patch": {
                "summary": "Onezone: replace a handle's metadata (nothing else may change)",
                "operationId": "onezoneModify",
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["metadata"],
                                "properties": {"metadata": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "204": {"description": "Modified"},
                    "400": _onezone_error("Bad metadata, or a field that cannot change"),
                    "404": missing,
                    **_ONEZONE_AUTH,
                },
                "security": security,
            },
            "delete": {
                "summary": "Onezone: delete a handle resource and its handle",
                "operationId": "onezoneDelete",
                "responses": {"204": {"description": "Deleted"}, "404": missing, **_ONEZONE_AUTH},
                "security": security,
            },
        }
        paths[f"{api}/user/handles/{{hid}}"] = {
            "parameters": [hid],
            "get": {
                **read,
                "summary": "Onezone: a handle resource",
                "operationId": "onezoneGetUser",
            },
        }
        paths[f"{api}/handles/{{hid}}/public"] = {
            "parameters": [hid],
            "get": {
                "summary": "Onezone: a handle resource's public view (no creator)",
                "operationId": "onezoneGetPublic",
                "responses": {"200": handle, "404": missing, "503": _ONEZONE_AUTH["503"]},
            },
        }
        service = _answer("A handle service", "OnezoneHandleService")
        paths[f"{api}/handle_services"] = {
            "get": {
                "summary": "Onezone: the configured handle services",
                "operationId": "onezoneListServices",
                "responses": {
                    "200": _answer(
                        "Their ids",
                        {
                            "type": "object",
                            "required": ["handle_services"],
                            "properties": {
                                "handle_services": {"type": "array", "items": {"type": "string"}}
                            },
                        },
                    ),
                    **_ONEZONE_AUTH,
                },
                "security": security,
            }
        }
        paths[f"{api}/handle_services/{{id}}"] = {
            "parameters": [sid],
            "get": {
                "summary": "Onezone: a handle service (name and prefix)",
                "operationId": "onezoneGetService",
                "responses": {"200": service, "404": missing, **_ONEZONE_AUTH},
                "security": security,
            },
        }
        paths[f"{api}/handle_services/{{id}}/public"] = {
            "parameters": [sid],
            "get": {
                "summary": "Onezone: a handle service's public view",
                "operationId": "onezoneGetServicePublic",
                "responses": {"200": service, "404": missing},
            },
        }
        paths[f"{api}/handle_services/{{id}}/handles"] = {
            "parameters": [sid],
            "get": {
                "summary": "Onezone: the handleIds of one handle service (needs LIST_HANDLES)",
                "operationId": "onezoneListServiceHandles",
                "responses": {"200": ids, "404": missing, **_ONEZONE_AUTH},
                "security": security,
            },
        }
        paths[f"{api}/handle_services/{{id}}/handles/{{hid}}"] = {
            "parameters": [sid, hid],
            "get": {
                **read,
                "summary": "Onezone: one handle of a handle service",
                "operationId": "onezoneGetServiceHandle",
            },
        }
    if proxy:
        hndl = _query(
            "hndl",
            "the suffix, prefix/suffix, or the whole public handle (as Onezone sends it)",
            {"type": "string"},
        )
        body = {"required": True, "content": {_JSON: {"schema": _ref("ProxyRequest")}}}
        bad = _onezone_error("A bad or missing value")
        paths[f"{proxy}/handle"] = {
            "parameters": [{**hndl, "required": True}],
            "put": {
                "summary": "Handle proxy (called by Onezone): register a share's handle",
                "operationId": "proxyRegister",
                "requestBody": body,
                "responses": {
                    "201": _answer(
                        "Registered: the public handle",
                        {
                            "type": "object",
                            "required": ["handle"],
                            "properties": {"handle": {"type": "string"}},
                        },
                    ),
                    "400": bad,
                    "409": _onezone_error("The handle exists already: alreadyExists"),
                    **_ONEZONE_AUTH,
                },
            },
            "patch": {
                "summary": "Handle proxy: a new URL and/or metadata",
                "operationId": "proxyModify",
                "requestBody": body,
                "responses": {
                    "204": {"description": "Modified"},
                    "400": bad,
                    "404": missing,
                    **_ONEZONE_AUTH,
                },
            },
            "delete": {
                "summary": "Handle proxy: unregister",
                "operationId": "proxyUnregister",
                "requestBody": body,
                "responses": {
                    "200": _answer(
                        "Unregistered",
                        {
                            "type": "object",
                            "required": ["message", "handle"],
                            "properties": {
                                "message": {"type": "string"},
                                "handle": {"type": "string"},
                            },
                        },
                    ),
                    "400": bad,
                    "404": missing,
                    **_ONEZONE_AUTH,
                },
            },
        }
    return paths


def describe(onezone: OnezoneConfig | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document; with ``onezone``, its sub-applications where it mounts them."""
    onezone = onezone or OnezoneConfig()
    paths = {
        **_handles_paths(),
        **_batch_paths(),
        **_history_paths(),
        **_session_paths(),
        **_onezone_paths(onezone.api_base, onezone.proxy_base),
        **_other_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "handle-server",
            "version": __version__,
            "description": "The Handle.Net HTTP JSON REST API (wire-compatible with the "
            "reference server), sessions, reverse lookup, the Onezone handle API and handle "
            "proxy, the resolver and operator endpoints.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "user: the percent-encoded identity index:handle; password: "
                    "its secret key",
                },
                "handleSession": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": 'Handle sessionId="..." (see /api/sessions)',
                },
            },
        },
    }
