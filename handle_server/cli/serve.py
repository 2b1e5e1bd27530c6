"""``handle-server serve``: the server in this process or in workers, TLS, the event loop,
signals, and logging."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import ssl
import sys
from typing import Any

from aiohttp import web

from storage import SchemaMismatch, StoreUnavailable

from .. import keys
from ..app import create_app
from ..auth.secrets import KeyFileError
from ..config import Config, ConfigError
from ..native.tcp import NativeTcp
from ..native.udp import NativeUdp
from ..native.views import NATIVE
from ..ops.access_log import (
    MalformedRequestFilter,
    NativeAccessLog,
    access_log_options,
    batched_access_log,
)
from ..ops.connections import (
    AcceptFailureLog,
    ConnectionGuard,
    GuardedRunner,
    raise_open_files_limit,
)
from ..ops.workers import run_workers
from .stores import store_failure, with_store

__all__ = ["serve", "setup_logging", "tls_context", "warn_about"]

log = logging.getLogger("handle_server")


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


_EXAMPLE_SECRET = "change-me"


def warn_about(config: Config) -> None:
    if config.source is None:
        log.warning(
            "no --config given: built-in defaults, no prefixes homed (every handle "
            "will be refused); see config.example.toml"
        )
    elif not config.handle.prefixes:
        log.warning("%s: [handle] prefixes is empty: every handle will be refused", config.source)
    for admin in config.admins:
        if admin.secret == _EXAMPLE_SECRET:
            log.warning(
                "%s: admin %s still has the example secret; change it", config.source, admin.id
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(config: Config) -> ssl.SSLContext | None:
    s = config.server
    if not s.tls_cert:
        if not _is_loopback(s.host):
            log.warning(
                "serving plain HTTP on %s: secret keys (HTTP Basic) and session ids cross the "
                "network readable by anyone on the path; set [server] tls_cert and tls_key, "
                "or serve behind a TLS-terminating proxy",
                s.host,
            )
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(s.tls_cert, s.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{config.source}: [server] tls_cert/tls_key: cannot load {s.tls_cert} with "
            f"{s.tls_key}: {exc}"
        ) from None
    return context


def serve(config: Config, workers: int = 1) -> int:
    warn_about(config)
    try:
        tls = tls_context(config)
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    if workers > 1:
        # The schema is checked (or an empty database given one) once, before any worker.
        status = with_store(config, lambda _store: _nothing(), migrate=False)
        if status != 0:
            return status
        return run_workers(config, workers, _worker)
    return _serve_here(config, tls)


async def _nothing() -> int:
    return 0


def _worker(config: Config, number: int, listening: Any) -> None:
    """One of ``serve --workers N``'s processes (started anew: logging is set up here).

    SIGTERM and SIGINT wait until the worker listens: one that came while it opened its
    store would end it with the store still open (and its connection threads waiting)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    setup_logging(config, f"[worker {number}] ")
    status = _serve_here(config, tls_context(config), listening=listening, worker=number)
    sys.exit(status)


def _serve_here(
    config: Config,
    tls: ssl.SSLContext | None,
    *,
    listening: Any = None,
    worker: int | None = None,
) -> int:
    """Serve in this process until SIGTERM or SIGINT; ``listening``: a worker's event, set
    once it listens (the port is then shared with the other workers)."""
    app = create_app(config)
    host, port = config.server.host, config.server.port
    soft, _ = raise_open_files_limit()
    if soft < config.server.max_connections + 64:
        log.warning(
            "the open-files limit (%d) is below [server] max_connections (%d) + 64: "
            "raise the hard limit (e.g. LimitNOFILE= in the service unit)",
            soft,
            config.server.max_connections,
        )
    if config.server.event_loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    loop.set_exception_handler(AcceptFailureLog())
    asyncio.set_event_loop(loop)
    main = loop.create_task(_run(app, config, tls, listening=listening, worker=worker))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    except (SchemaMismatch, StoreUnavailable) as exc:
        return store_failure(exc)
    except KeyFileError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"handle-server: cannot serve on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, web.GracefulExit):
                loop.run_until_complete(main)
        _cancel_all(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0


async def _run(
    app: web.Application,
    config: Config,
    tls: ssl.SSLContext | None,
    *,
    listening: Any,
    worker: int | None,
) -> None:
    """What ``web.run_app`` does, with each connection watched by a ``ConnectionGuard``."""
    s = config.server
    guard = ConnectionGuard(
        max_connections=s.max_connections, header_timeout=s.header_timeout, hot=app[keys.HOT]
    )
    runner = GuardedRunner(
        app,
        guard,
        handle_signals=True,
        keepalive_timeout=s.idle_timeout,
        **access_log_options(config, worker),
    )
    native: asyncio.Server | None = None
    udp_transport: asyncio.BaseTransport | None = None
    try:
        await runner.setup()  # inside: what started before a failure (the store) is closed
        site = web.TCPSite(
            runner, s.host, s.port, ssl_context=tls, reuse_port=listening is not None or None
        )
        await site.start()
        n = config.native
        if n.enabled:
            app[NATIVE].access = NativeAccessLog(config, worker)  # its lines name the worker
        if n.enabled and n.tcp:
            tcp = NativeTcp(
                app[NATIVE],
                max_message_bytes=n.max_message_bytes,
                timeout=n.timeout,
                max_connections=s.max_connections,
            )
            native = await asyncio.get_running_loop().create_server(
                tcp.protocol, n.host or s.host, n.port, reuse_port=listening is not None or None
            )
            log.info("native protocol on tcp %s:%d", n.host or s.host, n.port)
        if n.enabled and n.udp:
            loop = asyncio.get_running_loop()
            udp_transport, _ = await loop.create_datagram_endpoint(
                lambda: NativeUdp(app[NATIVE], rate=n.udp_rate),
                local_addr=(n.host or s.host, n.port),
                reuse_port=listening is not None or None,
            )
            log.info("native protocol on udp %s:%d", n.host or s.host, n.port)
        _listening(listening, "https" if tls else "http", config)
        _tune_collector()
        await asyncio.Event().wait()  # until a signal ends the loop (web.GracefulExit)
    finally:
        if native is not None:
            native.close()
        if udp_transport is not None:
            udp_transport.close()
        await runner.cleanup()


#: Allocations (less frees) between collections of the youngest generation: Python's 700 made
#: a batch of 512 writes pay 12 % of the event loop's time to the collector (bench/batch.py,
#: profiled); 10,000 costs a few MB at most.
_YOUNG_THRESHOLD = 10_000


def _tune_collector() -> None:
    """Once serving: what start-up made (modules, the app, the store) is moved out of the
    collector's reach (``gc.freeze``: it lives as long as the process), and the youngest
    generation is collected less often."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, middle, old)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _listening(event: Any, scheme: str, config: Config) -> None:
    if event is not None:
        event.set()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # handled by aiohttp now
        return
    log.info(
        "serving on %s://%s:%d (store: %s)",
        scheme,
        config.server.host,
        config.server.port,
        config.storage.path if config.storage.backend == "sqlite" else "PostgreSQL",
    )


def setup_logging(config: Config, tag: str = "", *, level: str | None = None) -> None:
    line = f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s"
    logging.basicConfig(level=(level or config.log.level).upper(), format=line, stream=sys.stderr)
    batched_access_log(logging.Formatter(line))  # the same lines, written a loop turn at a time
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    # aiosqlite's debug lines carry every statement's parameters: private values, and secret
    # hashes. Debugging this server never needs them.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
