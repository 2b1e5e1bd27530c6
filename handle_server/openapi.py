"""The OpenAPI 3.1 description of this server's HTTP interface (``GET /api/openapi.json``), and
the readable page made from it (``GET /api/docs``: plain HTML, no scripts, no external assets).

One description for everything that reads it: the docs page, the tests that check real answers
against it, and generated-input testing (schemathesis)."""

from __future__ import annotations

import html
from typing import Any

from . import __version__

__all__ = ["describe", "docs_page"]

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
                    "The record (responseCode 1), or 200 when nothing matched", "Record"
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
                _query("index", "delete only these values", {"type": "integer"}, repeat=True)
            ],
            "responses": {
                "200": _answer("Deleted", "Done"),
                "400": _error("Bad input, or no value at an index (200)"),
                "403": _error("Not permitted"),
                "404": _error("No such handle: responseCode 100"),
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
    return {"/api/handles": listing, "/api/handles/{handle}": handle_item}


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
                "302": {
                    "description": "To the chosen URL",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                },
                "404": {"description": "No such handle (HTML page, or JSON)"},
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


def describe() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "handle-server",
            "version": __version__,
            "description": "The Handle.Net HTTP JSON REST API (wire-compatible with the "
            "reference server), sessions, reverse lookup, the resolver and operator endpoints.",
        },
        "paths": {**_handles_paths(), **_session_paths(), **_other_paths()},
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


def docs_page(document: dict[str, Any]) -> str:
    """A readable page of ``document``: every operation, its parameters and its answers."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(document['info']['title'])} API</title><style>",
        "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}",
        "code,.path{font-family:ui-monospace,monospace}h2{margin-top:2.5rem}",
        ".op{border-left:4px solid #888;padding:.2rem 1rem;margin:1rem 0}",
        ".method{font-weight:bold;text-transform:uppercase}table{border-collapse:collapse}",
        "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}",
        "</style></head><body>",
        f"<h1>{e(document['info']['title'])} {e(document['info']['version'])}</h1>",
        f"<p>{e(document['info']['description'])}</p>",
        "<p>The machine-readable description: <a href='/api/openapi.json'>"
        "/api/openapi.json</a> (OpenAPI 3.1).</p>",
    ]
    for path, item in document["paths"].items():
        parts.append(f"<h2 class='path'>{e(path)}</h2>")
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method == "parameters":
                continue
            parts.append(
                f"<div class='op' id='{e(op.get('operationId', ''))}'>"
                f"<p><span class='method'>{e(method)}</span> <span class='path'>{e(path)}</span>"
                f" — {e(op.get('summary', ''))}</p>"
            )
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            params = shared + op.get("parameters", [])
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>")
                for p in params:
                    parts.append(
                        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                        f"<td>{e(p.get('description', ''))}</td></tr>"
                    )
                parts.append("</table>")
            parts.append("<table><tr><th>status</th><th>answer</th></tr>")
            for status, answer in op["responses"].items():
                parts.append(
                    f"<tr><td>{e(status)}</td><td>{e(answer.get('description', ''))}</td></tr>"
                )
            parts.append("</table></div>")
    parts.append("</body></html>")
    return "".join(parts)
