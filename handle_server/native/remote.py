"""Records homed elsewhere, for ``[resolver] mode = "global"``: fetched through the Handle
System (``client.GlobalResolver``) and kept in a ``ResolutionCache`` of their own, for their
values' TTLs (a record not found, briefly), one fetch at a time per handle."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from storage import Handle, HandleStore

from ..cache import ResolutionCache
from ..config import Config
from ..errors import UpstreamUnavailable
from . import codec
from .client import GlobalResolver, UpstreamError, read_root_info
from .site import SiteInfo

__all__ = ["RemoteHandles", "remote_cache"]


class RemoteHandles:
    def __init__(self, resolver: GlobalResolver) -> None:
        self.resolver = resolver

    async def fetch(self, handle: str, authoritative: bool) -> Handle | None:
        """The record of ``handle`` as its site gives it (public values); ``None`` if it or
        its prefix is unknown; ``UpstreamUnavailable`` if no server answers in time."""
        try:
            answer = await self.resolver.resolve(handle, authoritative=authoritative)
        except LookupError:
            return None  # a prefix the root does not know: not found, as hdl.handle.net says
        except UpstreamError as exc:
            raise UpstreamUnavailable(
                handle, f"The site responsible for {handle} did not answer in time ({exc})"
            ) from None
        if answer.response_code == codec.RC_HANDLE_NOT_FOUND:
            return None
        if answer.response_code == codec.RC_VALUES_NOT_FOUND:
            return Handle(handle, ())
        if answer.response_code != codec.RC_SUCCESS:
            raise UpstreamUnavailable(
                handle, f"The site responsible for {handle} answered RC {answer.response_code}"
            )
        _, values = codec.decode_resolution_body(
            answer.body, digest=answer.flag(codec.FLAG_REQUEST_DIGEST)
        )
        return Handle(handle, tuple(v for v in values if v.public_read))


def root_sites(config: Config) -> list[SiteInfo]:
    """The root sites ``[resolver] root_info`` names, or the Global Handle Registry's as the
    reference ships them."""
    if config.resolver.root_info:
        return read_root_info(Path(config.resolver.root_info).read_bytes())
    shipped = resources.files(__package__).joinpath("data/root_info").read_bytes()
    return read_root_info(shipped)


def remote_cache(
    config: Config,
    store: HandleStore,
    *,
    clock: Callable[[], float] = time.time,
    observed: Callable[[str, str, float], None] = lambda server, outcome, seconds: None,
) -> ResolutionCache:
    """The cache of records homed elsewhere; ``observed`` is told of each upstream request
    (``GlobalResolver``)."""
    resolver = GlobalResolver(
        root_sites(config),
        timeout=config.resolver.timeout,
        clock=clock,
        observed=observed,
        concurrency=config.resolver.upstream_concurrency,
        certify=config.resolver.certify,
    )
    cache = ResolutionCache(store, config.cache, clock=clock, fetch=RemoteHandles(resolver).fetch)
    cache.on_clear = resolver.forget_sites
    return cache
