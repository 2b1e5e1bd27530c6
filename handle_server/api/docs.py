"""The API describing itself: ``/api/openapi.json`` (``openapi.describe``) and ``/api/docs``,
the same description as a page to read, without scripts or external assets."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from .. import keys
from ..responses import json_response
from .openapi import describe

__all__ = ["DOCS_STYLE", "api_docs", "docs_page", "openapi_json"]


#: The docs page's one stylesheet (its hash is in the pages' Content-Security-Policy).
DOCS_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "code,.path{font-family:ui-monospace,monospace}h2{margin-top:2.5rem}"
    ".op{border-left:4px solid #888;padding:.2rem 1rem;margin:1rem 0}"
    ".method{font-weight:bold;text-transform:uppercase}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}"
)


def docs_page(document: dict[str, Any]) -> str:
    """A readable page of ``document``: every operation, its parameters and its answers."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(document['info']['title'])} API</title><style>{DOCS_STYLE}</style>",
        "</head><body>",
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


async def openapi_json(request: web.Request) -> web.Response:
    """GET /api/openapi.json"""
    return json_response(request, describe(request.app[keys.CONFIG].onezone))


async def api_docs(request: web.Request) -> web.Response:
    """GET /api/docs: the description as a page to read."""
    return web.Response(
        text=docs_page(describe(request.app[keys.CONFIG].onezone)), content_type="text/html"
    )
