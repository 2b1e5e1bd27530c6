"""The ``handle-server`` command: the only place that reads argv and files."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import ipaddress
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import storage
from storage import HandleStore, SchemaMismatch, StoreUnavailable

from .. import __version__
from ..app import create_app
from ..auth.secrets import KeyFileError, SecretKeeper
from ..config import Config, ConfigError, load_config
from ..ops.access_log import MalformedRequestFilter, access_log_options
from ..ops.connections import (
    AcceptFailureLog,
    ConnectionGuard,
    GuardedRunner,
    raise_open_files_limit,
)
from ..ops.workers import run_workers
from ..service import HandleService
from .admin import (
    EXIT_USAGE,
    AdminFailed,
    HandleApi,
    add_admin,
    administered_prefix,
    local_api,
    parse_permissions,
    parse_values,
    remote_api,
)
from .transfer import ImportFailed, export_store, export_to_path, import_file

__all__ = ["main"]

log = logging.getLogger("handle_server")
_EXAMPLE_SECRET = "change-me"
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
SECRET_VARIABLE = "HANDLE_SERVER_SECRET"
_ADMIN_EPILOG = f"""\
Where the command goes: --config FILE works on the configured store (no server needs to
run; it acts as the first [[admins]] entry of the handle's prefix), --server URL on a running
server as --identity, whose secret key is read from --secret-file, from ${SECRET_VARIABLE},
or asked for on a terminal.

Exit codes: 0 done; 1 the store or server could not be reached; 2 a mistake in the command,
the configuration or the values; 3 no such handle or value; 4 the handle or value exists
already; 5 not allowed (no credentials, wrong ones, or no right to do it)."""


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
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes sharing the port (default 1)",
    )

    def with_config(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help, description=help)
        command.add_argument("--config", metavar="FILE", help="TOML configuration")
        return command

    with_config(
        "check-config",
        "check the configuration, its TLS files and the store, without serving",
    )
    migrate = with_config("migrate", "bring the store's schema up to this version's")
    migrate.add_argument(
        "--check",
        action="store_true",
        help="only tell whether a migration is needed (exit code 1 if it is); an empty "
        "database is given the schema",
    )
    export = with_config("export", "write every handle record as JSON Lines")
    export.add_argument(
        "-o", "--output", metavar="FILE", help="file to write (default: standard output)"
    )
    export.add_argument("--batch", type=_positive, default=1000, help="records per read")
    load = with_config("import", "store the records of a JSON Lines export")
    load.add_argument("file", metavar="FILE", type=Path, help="an export (handle-server export)")
    load.add_argument("--batch", type=_positive, default=1000, help="records per transaction")
    load.add_argument(
        "--replace",
        action="store_true",
        help="replace handles stored with other values (default: stop at the first)",
    )
    keygen = with_config(
        "keygen", "make the server key that keeps secret keys encrypted ([auth] key_file)"
    )
    keygen.add_argument(
        "--rekey-admins",
        action="store_true",
        help="the key was lost: keep the configured admins' secrets anew with the key in "
        "key_file (made if missing); other identities then need new secrets",
    )
    _admin_commands(commands)
    return parser


def _admin_commands(commands: Any) -> None:
    def admin(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=_ADMIN_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        where = command.add_argument_group("where the command goes")
        where.add_argument("--config", metavar="FILE", help="work on this configuration's store")
        where.add_argument("--server", metavar="URL", help="work through the server at URL")
        where.add_argument("--identity", metavar="INDEX:HANDLE", help="who to act as on --server")
        where.add_argument("--secret-file", metavar="FILE", type=Path, help="its secret key")
        where.add_argument(
            "--cafile", metavar="FILE", type=Path, help="CA certificates to trust for --server"
        )
        return command

    get = admin("get", "show a handle's record as the REST API answers it (JSON)")
    get.add_argument("handle", metavar="HANDLE")
    get.add_argument("--index", type=int, action="append", default=[], help="only this index")
    get.add_argument("--type", action="append", default=[], help="only values of this type")
    get.add_argument(
        "--public", action="store_true", help="only public values, as anyone sees them"
    )

    create = admin("create", "create a handle (a HANDLE ending in / gets a new unique suffix)")
    create.add_argument("handle", metavar="HANDLE")
    create.add_argument("--url", action="append", default=[], help="a URL value (repeatable)")
    create.add_argument(
        "--value",
        action="append",
        default=[],
        metavar="[INDEX:]TYPE=DATA",
        help="a value with text data (repeatable); without INDEX, the lowest free one",
    )
    create.add_argument(
        "--json",
        metavar="FILE",
        help='the values as a REST PUT body (array or {"values": [...]}); - reads stdin',
    )
    create.add_argument(
        "--overwrite", action="store_true", help="replace the record if the handle exists"
    )

    delete = admin("delete", "delete a handle, or only the values at --index")
    delete.add_argument("handle", metavar="HANDLE")
    delete.add_argument("--index", type=int, action="append", default=[], help="repeatable")

    listing = admin("list", "list the handles of a prefix, one per line")
    listing.add_argument("prefix", metavar="PREFIX")
    listing.add_argument("--page", type=int, help="only this page (from 0)")
    listing.add_argument("--page-size", type=_positive, default=1000, help="with --page")

    add = admin("add-admin", "give an identity HS_ADMIN rights on a handle (or a prefix handle)")
    add.add_argument("handle", metavar="HANDLE")
    add.add_argument("admin", metavar="INDEX:HANDLE", help="the identity to make an admin")
    add.add_argument(
        "--permissions",
        default="011111110011",
        help="12 characters of 0/1, 'all', or names such as add_value,modify_value "
        "(default 011111110011: all but listing and derived prefixes)",
    )
    add.add_argument("--index", type=int, help="where the HS_ADMIN goes (default: 100 or next)")


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


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


def serve(config: Config, workers: int = 1) -> int:
    _warn_about(config)
    try:
        tls = _tls_context(config)
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    if workers > 1:
        # The schema is checked (or an empty database given one) once, before any worker.
        status = _with_store(config, lambda _store: _nothing(), migrate=False)
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
    _setup_logging(config, f"[worker {number}] ")
    status = _serve_here(config, _tls_context(config), listening=listening, worker=number)
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
        return _store_failure(exc)
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
    guard = ConnectionGuard(max_connections=s.max_connections, header_timeout=s.header_timeout)
    runner = GuardedRunner(
        app,
        guard,
        handle_signals=True,
        keepalive_timeout=s.idle_timeout,
        **access_log_options(config, worker),
    )
    try:
        await runner.setup()  # inside: what started before a failure (the store) is closed
        site = web.TCPSite(
            runner, s.host, s.port, ssl_context=tls, reuse_port=listening is not None or None
        )
        await site.start()
        _listening(listening, "https" if tls else "http", config)
        await asyncio.Event().wait()  # until a signal ends the loop (web.GracefulExit)
    finally:
        await runner.cleanup()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _with_store(
    config: Config, work: Callable[[HandleStore], Awaitable[int]], *, migrate: bool
) -> int:
    """Open the configured store, run ``work`` on it, close it; store failures become a
    message and an exit code."""

    async def run() -> int:
        store = await storage.open_store(
            config.storage.backend,
            path=config.storage.path,
            dsn=config.storage.dsn,
            migrate=migrate,
        )
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (SchemaMismatch, StoreUnavailable) as exc:
        return _store_failure(exc)


def _store_failure(exc: SchemaMismatch | StoreUnavailable) -> int:
    """The message and exit code of a store that cannot be used: 2 for a schema this server
    will not run on (the operator must act), 1 for one it cannot reach."""
    if isinstance(exc, StoreUnavailable):
        print(f"handle-server: {exc.message}", file=sys.stderr)
        return 1
    print(f"handle-server: {exc}", file=sys.stderr)
    return 2


def _where(config: Config) -> str:
    if config.storage.backend == "sqlite":
        return config.storage.path
    return "the PostgreSQL database"


def migrate(config: Config, *, check: bool) -> int:
    backend = config.storage.backend
    latest = storage.schema_version(backend)
    if check:

        async def report(store: HandleStore) -> int:
            print(f"{_where(config)}: schema version {latest}, up to date")
            return 0

        status = _with_store(config, report, migrate=False)
        return 1 if status == 2 else status

    async def done(store: HandleStore) -> int:
        was = store.schema_from
        if was == latest:
            print(f"{_where(config)}: schema version {latest}, up to date")
        elif was == 0:
            print(f"{_where(config)}: created schema version {latest}")
        else:
            print(f"{_where(config)}: migrated schema version {was} to {latest}")
        return 0

    return _with_store(config, done, migrate=True)


def check_config(config: Config) -> int:
    """What ``serve`` would check before it listens, and a summary. Exit code 0 when it would
    start, 2 for a mistake in the configuration or a schema it will not run on, 1 when the
    store cannot be reached."""
    _warn_about(config)  # warnings go to the log (stderr) as when serving
    try:
        tls = _tls_context(config)
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    s = config.server
    print(f"{config.source}: configuration is valid")
    print(f"  listens on {s.host}:{s.port} ({'HTTPS' if tls else 'plain HTTP'})")
    print(f"  prefixes: {', '.join(config.handle.prefixes) or '(none)'}")
    print(f"  admins: {', '.join(a.id for a in config.admins) or '(none)'}")
    key_file = config.auth.key_file
    if not Path(key_file).exists():
        print(f"  server key: {key_file} does not exist yet; serve makes it (or keygen)")
    else:
        try:
            keeper = SecretKeeper.from_key_file(key_file)
        except KeyFileError as exc:
            print(f"handle-server: {exc}", file=sys.stderr)
            return 2
        print(f"  server key: {key_file}, key id {keeper.key_id.decode()}")
    latest = storage.schema_version(config.storage.backend)
    if config.storage.backend == "sqlite" and not Path(config.storage.path).exists():
        print(f"  store: {config.storage.path} does not exist yet; serve creates it")
        return 0

    async def report(store: HandleStore) -> int:
        print(f"  store: {_where(config)}, schema version {latest}, up to date")
        return 0

    return _with_store(config, report, migrate=False)


def keygen(config: Config, *, rekey_admins: bool) -> int:
    """Make the key file (never over an existing one); with ``rekey_admins``, keep the
    configured admins' secrets with it in the store."""
    path = config.auth.key_file
    if not rekey_admins:
        try:
            SecretKeeper.make_key_file(path)
        except FileExistsError:
            print(f"handle-server keygen: {path} exists; it is not replaced", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"handle-server keygen: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"made the server key {path}: back it up apart from the store")
        return 0
    try:
        keeper, made = SecretKeeper.load_or_make(path)
    except KeyFileError as exc:
        print(f"handle-server keygen: {exc}", file=sys.stderr)
        return 2

    async def rekey(store: HandleStore) -> int:
        await HandleService(store, config, keeper).home_prefixes(rekey=True)
        print(
            f"kept the secrets of {len(config.admins)} configured admin(s) with the key "
            f"{keeper.key_id.decode()} in {path}{' (made now)' if made else ''}"
        )
        return 0

    return _with_store(config, rekey, migrate=False)


def export(config: Config, output: str | None, batch: int) -> int:
    async def run(store: HandleStore) -> int:
        if output is None:
            count = await export_store(store, sys.stdout.buffer, batch=batch)
            sys.stdout.buffer.flush()
        else:
            count = await export_to_path(store, Path(output), batch=batch)
        log.info("exported %d handles", count)
        return 0

    return _with_store(config, run, migrate=False)


def import_(config: Config, path: Path, batch: int, replace: bool) -> int:
    if not path.is_file():
        print(f"handle-server: {path}: no such file", file=sys.stderr)
        return 2

    async def run(store: HandleStore) -> int:
        try:
            summary = await import_file(store, path, batch=batch, replace=replace)
        except ImportFailed as exc:
            s = exc.summary
            print(
                f"handle-server: {exc}\n"
                f"handle-server: lines 1-{s.lines} are stored ({s.result.created} created, "
                f"{s.result.replaced} replaced, {s.result.unchanged} already there); fix the "
                "line and run the same command again: what is stored is recognised and skipped",
                file=sys.stderr,
            )
            return 1
        r = summary.result
        log.info(
            "imported %d lines: %d handles created, %d replaced, %d already there",
            summary.lines,
            r.created,
            r.replaced,
            r.unchanged,
        )
        return 0

    return _with_store(config, run, migrate=False)


def admin_command(args: argparse.Namespace, config: Config) -> int:
    """Run one of the handle commands (``_ADMIN_ACTIONS``) where ``args`` send it (see
    ``handle_server.admin``)."""
    action = _ADMIN_ACTIONS[args.command]

    async def run() -> int:
        target = args.prefix if args.command == "list" else args.handle
        if args.server is not None:
            secret = _secret(args) if args.identity else None
            where = remote_api(args.server, args.identity, secret, cafile=args.cafile)
        else:
            where = local_api(config, administered_prefix(target))
        async with where as api:
            await action(api, args)
        return 0

    try:
        if (args.server is None) == (config.source is None):
            raise AdminFailed("give either --config FILE or --server URL", EXIT_USAGE)
        if args.server is None and (args.identity or args.secret_file or args.cafile):
            raise AdminFailed("--identity, --secret-file and --cafile go with --server", EXIT_USAGE)
        return asyncio.run(run())
    except AdminFailed as exc:
        print(f"handle-server {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (SchemaMismatch, StoreUnavailable) as exc:
        return _store_failure(exc)


def _secret(args: argparse.Namespace) -> str:
    """The identity's secret key: never from the command line, where other users see it."""
    if args.secret_file is not None:
        try:
            return args.secret_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminFailed(f"--secret-file {args.secret_file}: {exc}", EXIT_USAGE) from None
    if SECRET_VARIABLE in os.environ:
        return os.environ[SECRET_VARIABLE]
    if sys.stdin.isatty():
        return getpass.getpass(f"secret key of {args.identity}: ")
    raise AdminFailed(
        f"--identity {args.identity} needs its secret key: --secret-file FILE or "
        f"${SECRET_VARIABLE}",
        EXIT_USAGE,
    )


def _print_json(body: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.buffer.flush()


async def _get(api: HandleApi, args: argparse.Namespace) -> None:
    params = [("index", str(i)) for i in args.index] + [("type", t) for t in args.type]
    public = args.public or not api.authenticated  # anonymous callers see public values
    params.append(("publicOnly", "true" if public else "false"))
    params.append(("auth", "true"))  # from the store, not a cache
    _print_json(await api.get(args.handle, params))


def _body_of(args: argparse.Namespace) -> Any:
    if args.json is None:
        if not args.url and not args.value:
            raise AdminFailed("give the values: --url, --value or --json", EXIT_USAGE)
        return parse_values(args.value, args.url)
    if args.url or args.value:
        raise AdminFailed("--json gives all the values: leave out --url and --value", EXIT_USAGE)
    try:
        raw = sys.stdin.buffer.read() if args.json == "-" else Path(args.json).read_bytes()
        return orjson.loads(raw)
    except OSError as exc:
        raise AdminFailed(f"--json {args.json}: {exc.strerror or exc}", EXIT_USAGE) from None
    except orjson.JSONDecodeError as exc:
        raise AdminFailed(f"--json {args.json}: not JSON: {exc}", EXIT_USAGE) from None


async def _create(api: HandleApi, args: argparse.Namespace) -> None:
    body = _body_of(args)
    if args.handle.endswith("/"):
        answer = await api.put(args.handle, body, [("mintNewSuffix", "true")])
        print(f"created {answer.body['handle']}")
        return
    params = [("overwrite", "true" if args.overwrite else "false")]
    answer = await api.put(args.handle, body, params)
    print(f"{'created' if answer.status == 201 else 'replaced'} {args.handle}")


async def _delete(api: HandleApi, args: argparse.Namespace) -> None:
    await api.delete(args.handle, args.index)
    if args.index:
        listed = ", ".join(map(str, sorted(set(args.index))))
        print(f"removed index {listed} of {args.handle}")
    else:
        print(f"deleted {args.handle}")


async def _list(api: HandleApi, args: argparse.Namespace) -> None:
    if args.page is not None and args.page < 0:
        raise AdminFailed(f"--page must not be negative, got {args.page}", EXIT_USAGE)
    body = await api.list(args.prefix, args.page, args.page_size)
    names = body.get("handles", [])
    if names:
        sys.stdout.write("\n".join(names) + "\n")
    sys.stdout.flush()


async def _add_admin(api: HandleApi, args: argparse.Namespace) -> None:
    permissions = parse_permissions(args.permissions)
    done, index = await add_admin(api, args.handle, args.admin, permissions, index=args.index)
    print(f"{done}: {args.admin} is an admin of {args.handle} at index {index} ({permissions})")


_ADMIN_ACTIONS = {
    "get": _get,
    "create": _create,
    "delete": _delete,
    "list": _list,
    "add-admin": _add_admin,
}


def _setup_logging(config: Config, tag: str = "", *, level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or config.log.level).upper(),
        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    # aiosqlite's debug lines carry every statement's parameters: private values, and secret
    # hashes. Debugging this server never needs them.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args.config, getattr(args, "host", None), getattr(args, "port", None))
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    if args.command in _ADMIN_ACTIONS:
        # The server started for the command logs its warnings, not its start-up chatter.
        _setup_logging(config, level="debug" if config.log.level == "debug" else "warning")
        return admin_command(args, config)
    _setup_logging(config)
    if args.command == "serve":
        if args.workers < 1:
            print("handle-server: --workers: must be at least 1", file=sys.stderr)
            return 2
        return serve(config, args.workers)
    if config.source is None:
        print(f"handle-server {args.command}: --config is needed", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return check_config(config)
    if args.command == "migrate":
        return migrate(config, check=args.check)
    if args.command == "export":
        return export(config, args.output, args.batch)
    if args.command == "import":
        return import_(config, args.file, args.batch, args.replace)
    if args.command == "keygen":
        return keygen(config, rekey_admins=args.rekey_admins)
    return 2  # pragma: no cover - argparse refuses unknown commands
