"""Which URL the resolver redirects to: URL values and 10320/loc location lists, chosen as the
reference proxy (hdl.handle.net) chooses.

- Without a 10320/loc value: the first value (by index) of type ``URL``, else the first
  ``URL.*`` subtype, with ``urlappend`` appended; a 302.
- With 10320/loc values: their ``<location href=...>`` (or ``href_template`` with ``{hdl}`` /
  ``{hdl:path}``) entries, plus the URL values as "legacy" locations weighted by the
  ``urlWeight`` / ``urlSubtypeWeight`` attributes (``no_legacy`` leaves them out). The
  ``choose_by`` (or ``chooseby``) list, by default ``locatt,address,country,score,weighted``,
  narrows the candidates step by step: ``locatt`` keeps locations with the attribute a
  ``?locatt=name:value`` parameter names (if any match), ``address`` those whose
  ``addresses`` CIDR list holds the client address, ``country`` those whose ``country`` is the
  ``?country=`` parameter (no GeoIP database here), ``score`` those with the highest
  ``score``; one left is the answer, otherwise a random pick weighted by ``weight`` (default
  1). ``http_sc`` on the location or the list picks the redirect status.

Not done (yet): 10320/links and 10320/headers, namespace locations, ``include``, and
``locatt`` derived from the Accept headers.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from storage import HandleValue

__all__ = [
    "DEFAULT_CHOOSE_BY",
    "Redirect",
    "UnsafeAppend",
    "append_to",
    "choose_redirect",
    "is_location_list",
    "location_lists",
]

LOC_TYPE = "10320/LOC"
URL_TYPE = "URL"
DEFAULT_CHOOSE_BY = ("locatt", "address", "country", "score", "weighted")
_REDIRECT_STATUSES = {"301": 301, "302": 302, "303": 303, "307": 307, "308": 308}


class UnsafeAppend(ValueError):
    """A ``urlappend`` that would change where a redirect goes (its scheme, user info, host or
    port), or that no URL can hold."""


# What a Location header cannot carry as it is: control characters (a CR or LF would end the
# header) and spaces.
_UNSAFE_IN_LOCATION = re.compile(r"[\x00-\x20\x7f-\x9f]")


def _percent_encode(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))


def append_to(url: str, urlappend: str) -> str:
    """``url`` with ``urlappend`` after it, as the reference proxy appends it, provided the
    result still goes to the same place: the scheme, user info, host and port of ``url`` are
    never changed by what a client appends (``https://example.org`` + ``@evil.example`` would
    send the reader to evil.example). Raises ``UnsafeAppend``. The result is fit for a
    Location header: control characters and spaces are percent-encoded."""
    target = url + urlappend
    if urlappend:
        try:
            before, after = urlsplit(url), urlsplit(target)
        except ValueError:
            raise UnsafeAppend("urlappend makes the location an invalid URL") from None
        if (before.scheme, before.netloc) != (after.scheme, after.netloc):
            raise UnsafeAppend(
                "urlappend may add to the path, query or fragment of the location only, "
                "not change its scheme, host or port"
            )
    return _UNSAFE_IN_LOCATION.sub(_percent_encode, target)


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    status: int = 302


def _is_type(value: HandleValue, wanted: str) -> bool:
    t = value.type.upper()
    return t == wanted or t.startswith(wanted + ".")


def _text(value: HandleValue) -> str:
    return value.data.decode("utf-8", "replace")


def is_location_list(value: HandleValue) -> bool:
    """Whether ``value`` is a 10320/loc location list (or a subtype of it)."""
    return _is_type(value, LOC_TYPE)


def location_lists(values: Sequence[HandleValue]) -> list[Element]:
    """The parsed ``<locations>`` of the 10320/loc values; unparseable ones are skipped."""
    lists = []
    for value in values:
        if _is_type(value, LOC_TYPE):
            try:
                root = ElementTree.fromstring(value.data)
            except (ElementTree.ParseError, DefusedXmlException, ValueError):
                continue
            lists.append(root)
    return lists


def _legacy_url(values: Sequence[HandleValue]) -> str | None:
    for value in values:
        if value.type.upper() == URL_TYPE:
            return _text(value)
    for value in values:
        if _is_type(value, URL_TYPE):
            return _text(value)
    return None


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def _flag(text: str | None) -> bool:
    return (text or "").strip().lower() in {"true", "yes", "1"}


def _list_attribute(lists: Sequence[Element], name: str) -> str | None:
    for root in lists:
        if root.get(name) is not None:
            return root.get(name)
    return None


def _candidates(values: Sequence[HandleValue], lists: Sequence[Element]) -> list[Element]:
    locations = [
        child
        for root in lists
        for child in root
        if isinstance(child.tag, str) and child.tag.lower() in {"location", "loc_template"}
    ]
    if _flag(_list_attribute(lists, "no_legacy")):
        return locations
    url_weight = _number(_list_attribute(lists, "urlWeight"), 0.0 if lists else 1.0)
    subtype_weight = _number(_list_attribute(lists, "urlSubtypeWeight"), 0.0)
    has_plain = any(v.type.upper() == URL_TYPE for v in values)
    if not has_plain:
        subtype_weight = url_weight
    for value in values:
        if _is_type(value, URL_TYPE):
            plain = value.type.upper() == URL_TYPE
            weight = url_weight if plain else subtype_weight
            locations.append(
                Element("location", href=_text(value), weight=str(weight), mode="legacy")
            )
    return locations


def _href(location: Element, handle: str) -> str | None:
    href = location.get("href")
    if href is None and location.get("href_template") is not None:
        href = (
            location.get("href_template", "")
            .replace("{hdl}", quote(handle, safe=""))
            .replace("{hdl:path}", quote(handle, safe="/"))
        )
    return href


def _by_locatt(locations: list[Element], locatts: Sequence[str]) -> list[Element]:
    for param in locatts:
        name, sep, wanted = param.partition(":")
        name = name.strip()
        matched = [
            loc
            for loc in locations
            if loc.get(name) is not None and (not sep or loc.get(name) == wanted)
        ]
        if matched:
            locations = matched
    return locations


def _by_address(locations: list[Element], remote: str | None) -> list[Element]:
    if not remote:
        return locations
    try:
        client = ipaddress.ip_address(remote)
    except ValueError:
        return locations
    matched = []
    for loc in locations:
        for block in (loc.get("addresses") or "").split(","):
            try:
                if block.strip() and client in ipaddress.ip_network(block.strip(), strict=False):
                    matched.append(loc)
                    break
            except ValueError:
                continue
    return matched or locations


def _by_country(locations: list[Element], country: str | None) -> list[Element]:
    if not country:
        return locations
    matched = [
        loc
        for loc in locations
        if (loc.get("country") or "").strip().lower() == country.strip().lower()
    ]
    return matched or locations


def _by_score(locations: list[Element]) -> list[Element]:
    best = max(_number(loc.get("score"), 0.0) for loc in locations)
    best = max(best, 0.0)
    return [loc for loc in locations if _number(loc.get("score"), 0.0) == best]


def _weighted(locations: list[Element], rng: random.Random) -> Element:
    weights = [max(0.0, _number(loc.get("weight"), 1.0)) for loc in locations]
    if sum(weights) <= 0:
        return rng.choice(locations)
    return rng.choices(locations, weights=weights, k=1)[0]


def choose_redirect(
    values: Sequence[HandleValue],
    handle: str,
    *,
    locatt: Sequence[str] = (),
    urlappend: str = "",
    remote: str | None = None,
    country: str | None = None,
    rng: random.Random | None = None,
    lists: Sequence[Element] | None = None,
) -> Redirect | None:
    """Where to send a client resolving ``handle`` with these (public) values, or ``None``
    when there is nowhere (the values page is shown instead). Raises ``UnsafeAppend`` for a
    ``urlappend`` that would change the target's host (see ``append_to``). ``lists``: the
    values' ``location_lists``, when the caller has them parsed already."""
    if lists is None:
        lists = location_lists(values)
    if not lists:
        url = _legacy_url(values)
        return Redirect(append_to(url, urlappend)) if url is not None else None
    locations = [loc for loc in _candidates(values, lists) if _href(loc, handle) is not None]
    if not locations:
        return None
    choose_by = _list_attribute(lists, "choose_by") or _list_attribute(lists, "chooseby")
    steps = [s.strip().lower() for s in choose_by.split(",")] if choose_by else DEFAULT_CHOOSE_BY
    rng = rng or random.Random()
    chosen: Element | None = None
    for step in steps:
        if len(locations) == 1:
            chosen = locations[0]
            break
        if step == "locatt":
            locations = _by_locatt(locations, locatt)
        elif step == "address":
            locations = _by_address(locations, remote)
        elif step == "country":
            locations = _by_country(locations, country)
        elif step == "score":
            locations = _by_score(locations)
        elif step == "weighted":
            chosen = _weighted(locations, rng)
            break
    if chosen is None:
        chosen = locations[0] if len(locations) == 1 else _weighted(locations, rng)
    href = _href(chosen, handle)
    assert href is not None
    status_text = chosen.get("http_sc") or _list_attribute(lists, "http_sc") or "302"
    return Redirect(append_to(href, urlappend), _REDIRECT_STATUSES.get(status_text.strip(), 302))
