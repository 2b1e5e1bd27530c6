"""The resolver's HTML pages: plain server-rendered markup, one small inline stylesheet, no
scripts and no external assets. Every piece of text from a record or a request is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlsplit

from storage import HandleValue

from ..serializers import data_to_json, format_timestamp

__all__ = [
    "STYLE",
    "deleted_page",
    "error_page",
    "lookup_page",
    "record_page",
    "redirect_body",
]

#: The pages' one stylesheet (its hash is in their Content-Security-Policy).
STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:.8rem 1.5rem}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:64rem;margin:1.5rem auto;padding:0 1.5rem}
h1{font-size:1.4rem;word-break:break-all}
form{display:flex;gap:.5rem;margin:1rem 0}
input[type=text]{flex:1;padding:.45rem .6rem;font-size:1rem;border:1px solid #b8c0cc;
border-radius:4px}
button{padding:.45rem 1rem;font-size:1rem;border:0;border-radius:4px;background:#1f3a5f;color:#fff}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:.5rem .7rem;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.data{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92rem}
.muted{color:#5b6573}.error{border-left:4px solid #b3261e;padding:.5rem 1rem;background:#fff}
footer{max-width:64rem;margin:2rem auto;padding:0 1.5rem;font-size:.85rem;color:#5b6573}
"""

_LINKABLE = frozenset({"http", "https", "ftp", "mailto"})


def _linkable(url: str) -> bool:
    """Whether ``url`` may be a link: a scheme a reader expects (never ``javascript:``), and
    parseable (a stored value such as ``http://[oops`` is shown as text)."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return False
    return scheme.lower() in _LINKABLE and not any(c.isspace() for c in url)


def _page(title: str, body: str, *, query: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        '<header><a href="/">Handle resolver</a></header><main>'
        f"{body}{_form(query)}</main>"
        "<footer>Served by handle-server. Add <code>?noredirect</code> to a handle to see its "
        "values instead of being redirected.</footer></body></html>"
    )


def _form(query: str) -> str:
    return (
        '<form action="/" method="get" role="search">'
        '<input type="text" name="hdl" placeholder="Handle, e.g. 20.500.12345/abc" '
        f'aria-label="Handle" value="{escape(query)}"><button type="submit">Resolve</button>'
        "</form>"
    )


def _data_cell(value: HandleValue) -> str:
    shown = data_to_json(value.type, value.data)
    fmt, content = shown["format"], shown["value"]
    if fmt == "admin":
        return escape(
            f"{content['index']}:{content['handle']} (permissions {content['permissions']})"
        )
    if fmt == "vlist":
        return "<br>".join(escape(f"{r['index']}:{r['handle']}") for r in content)
    if fmt == "base64":
        return f'<span class="muted">binary, base64:</span> {escape(content)}'
    text = escape(content)
    if _linkable(content):
        return f'<a href="{escape(content, quote=True)}" rel="nofollow noopener">{text}</a>'
    return text


def record_page(handle: str, values: Sequence[HandleValue]) -> str:
    """The public values of a handle as a table."""
    if values:
        rows = "".join(
            f"<tr><td>{v.index}</td><td>{escape(v.type)}</td>"
            f'<td class="data">{_data_cell(v)}</td>'
            f'<td class="muted">{escape(format_timestamp(v.timestamp))}</td></tr>'
            for v in values
        )
        table = (
            "<table><thead><tr><th>Index</th><th>Type</th><th>Data</th><th>Timestamp</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        table = '<p class="muted">This handle has no public values to show.</p>'
    permalink = "/" + quote(handle, safe="/")
    body = (
        f"<h1>Handle {escape(handle)}</h1>"
        f'<p class="muted">Values of <a href="{escape(permalink)}">{escape(handle)}</a></p>'
        f"{table}"
    )
    return _page(f"Handle {handle}", body, query=handle)


def error_page(status: int, message: str, handle: str | None) -> str:
    """Not found (404) and every other failure of a resolution."""
    title = "Handle not found" if status == 404 else "Cannot resolve"
    body = f'<h1>{escape(title)}</h1><p class="error">{escape(message)}</p>'
    return _page(title, body, query=handle or "")


def deleted_page(handle: str, when: float) -> str:
    """A handle that existed here and was deleted (410 Gone)."""
    at = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        "<h1>Handle deleted</h1>"
        f'<p class="error">{escape(handle)} existed and was deleted on {escape(at)}. '
        "It leads nowhere now.</p>"
    )
    return _page("Handle deleted", body, query=handle)


def lookup_page() -> str:
    body = (
        "<h1>Resolve a handle</h1><p>Enter a handle (or a DOI) to be taken to what it "
        "identifies, or add <code>?noredirect</code> to see its values.</p>"
    )
    return _page("Handle resolver", body)


def redirect_body(url: str) -> str:
    """The tiny page that goes with a redirect, as the reference proxy sends."""
    if _linkable(url):
        link = f'<a href="{escape(url, quote=True)}">{escape(url)}</a>'
    else:
        link = escape(url)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Handle Redirect</title>'
        f"</head><body>{link}</body></html>"
    )
