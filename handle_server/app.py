"""The application factory."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

import storage

from . import keys
from .api import docs
from .api.hot import HotAnswers
from .auth.secrets import SecretKeeper
from .config import Config
from .middlewares import error_middleware
from .native import signing
from .native import views as native_views
from .native.auth import Challenges
from .native.remote import remote_cache
from .native.service import NativeService
from .native.sessions import NativeSessions
from .native.site import SiteError, this_site
from .onezone.service import OnezoneService
from .ops.access_log import NativeAccessLog
from .ops.forwarded import TrustedProxies
from .ops.limits import ConcurrencyLimit
from .ops.metrics import Metrics, MetricsStore
from .ops.retention import pruning
from .ops.views import metrics_middleware
from .resolver import pages
from .resolver import views as resolver
from .responses import SecurityHeaders
from .routes import setup_routes
from .service import HandleService

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    config: Config,
    *,
    store: storage.HandleStore | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the application for ``config``. Without ``store`` the configured one is opened on
    start-up and closed on clean-up; a given ``store`` belongs to the caller."""
    limit = ConcurrencyLimit(config.server.max_concurrent_requests)
    middlewares = [metrics_middleware, error_middleware, limit.middleware]
    if config.server.trusted_proxies:
        middlewares.insert(0, TrustedProxies(config.server.trusted_proxies).middleware)
    app = web.Application(middlewares=middlewares, client_max_size=config.server.max_body_bytes)
    app[keys.CONFIG] = config
    app[keys.LIMIT] = limit
    app[keys.METRICS] = metrics = Metrics()
    security = SecurityHeaders(pages.STYLE, docs.DOCS_STYLE)
    app[keys.HOT] = hot = HotAnswers(metrics, clock, security.policy)
    # Before the routing: the application's own handler (aiohttp's, private; pinned) wrapped.
    app._handle = hot.wrap(app._handle)  # type: ignore[method-assign]
    app[resolver.RNG] = random.Random()
    app.on_response_prepare.append(resolver.vary_on_accept)
    app.on_response_prepare.append(security)
    if store is None:
        app.cleanup_ctx.append(_store_ctx)
    else:
        app[keys.STORE] = store

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        keeper, made = SecretKeeper.load_or_make(config.auth.key_file)
        if made:
            log.warning(
                "made a new server key in %s: secret keys are kept encrypted with it. Back it "
                "up apart from the store, and give every node on this store the same file",
                config.auth.key_file,
            )
        store = MetricsStore(app[keys.STORE], metrics)
        service = HandleService(store, config, keeper, clock=clock)
        service.cache.on_event = metrics.cache_event
        native = _native_service(config, service, metrics, clock) if config.native.enabled else None
        if config.resolver.mode == "global":
            service.remote = remote_cache(
                config, store, clock=clock, observed=metrics.upstream_request
            )
            service.remote.on_event = metrics.remote_cache_event
        await service.start()
        app[keys.SERVICE] = service
        app[keys.ONEZONE] = OnezoneService(service, config.onezone, service.authenticator)
        if native is not None:
            app[native_views.NATIVE] = native
        async with pruning(store, config.history, clock=clock):
            yield
        stats = service.cache.stats
        log.info(
            "cache: %d hits, %d misses (hit ratio %.3f), %d store reads, %d invalidations",
            stats.hits,
            stats.misses,
            stats.hit_ratio,
            stats.loads,
            stats.invalidations,
        )

    app.cleanup_ctx.append(service_ctx)
    setup_routes(app)
    return app


def _native_service(
    config: Config, service: HandleService, metrics: Metrics, clock: Callable[[], float]
) -> NativeService:
    """The native protocol's service, with the server's key pair (made now if there is none)
    and this site's HS_SITE, which ``service`` then puts on the prefix handles."""
    n = config.native
    key, made = signing.load_or_make_key(n.key_file)
    if made:
        log.warning(
            "made a new native key pair in %s: it signs certified answers, and its public half "
            "is in this site's HS_SITE (handle-server siteinfo). Back it up, and give every node "
            "of this site the same file",
            n.key_file,
        )
    public_key = signing.encode_public_key(key.public_key())
    try:
        service.site = this_site(config, public_key).encode()
    except SiteError as exc:
        log.warning("no HS_SITE for the prefix handles: %s", exc)
    challenges = Challenges(
        service.store, service.authenticator, lifetime=n.challenge_timeout, clock=clock
    )
    sessions = NativeSessions(service.store, lifetime=config.auth.session_idle_timeout, clock=clock)
    return NativeService(
        service,
        challenges=challenges,
        sessions=sessions,
        key=key,
        site=service.site,
        site_serial=n.site_serial,
        clock=clock,
        answered=metrics.native_answered,
        access=NativeAccessLog(config),
    )


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    store = await storage.open_store(
        config.storage.backend, path=config.storage.path, dsn=config.storage.dsn
    )
    app[keys.STORE] = store
    yield
    await store.close()
