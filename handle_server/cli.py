"""The ``handle-server`` command: the only place that reads argv and files."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import ssl
import sys
from collections.abc import Sequence

from aiohttp import web

from storage import SchemaMismatch

from . import __version__
from .app import create_app
from .config import Config, ConfigError, load_config

__all__ = ["main"]

log = logging.getLogger("handle_server")
_EXAMPLE_SECRET = "change-me"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handle-server", description="A Handle System resolver and registry."
    )
    parser.add_argument("--version", action="version", version=f"handle-server {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the Handle.Net JSON REST API")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration (default: built-in)")
    serve.add_argument("--host", help="address to listen on (overrides [server] host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides [server] port)")
    return parser


def _load(path: str | None, host: str | None, port: int | None) -> Config:
    config = load_config(path) if path else Config()
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--port: must be between 0 and 65535, got {port}")
    server = dataclasses.replace(
        config.server,
        host=config.server.host if host is None else host,
        port=config.server.port if port is None else port,
    )
    return config.replace(server=server)


def _warn_about(config: Config) -> None:
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


def _tls_context(config: Config) -> ssl.SSLContext | None:
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


def serve(config: Config) -> int:
    _warn_about(config)
    try:
        tls = _tls_context(config)
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    app = create_app(config)
    host, port = config.server.host, config.server.port
    scheme = "https" if tls else "http"
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            ssl_context=tls,
            print=lambda _: log.info(
                "serving on %s://%s:%d (store: %s %s)",
                scheme,
                host,
                port,
                config.storage.backend,
                config.storage.path,
            ),
            access_log=logging.getLogger("handle_server.access") if config.log.access else None,
        )
    except SchemaMismatch as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"handle-server: cannot serve on {host}:{port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args.config, args.host, args.port)
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        return serve(config)
    return 2  # pragma: no cover - argparse refuses unknown commands
