"""The ``handle-server`` command line: its parser, and which command runs what. The only place
that reads argv."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Config, ConfigError, load_config
from .admin import ADMIN_ACTIONS, SECRET_VARIABLE, admin_command
from .maintenance import (
    check_config,
    export,
    import_,
    keygen,
    migrate,
    native_keygen,
    prune_history,
    siteinfo,
)
from .serve import serve, setup_logging

__all__ = ["main"]

log = logging.getLogger("handle_server")
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
    export.add_argument(
        "--no-history",
        action="store_true",
        help="only the records, as they are now: no histories, no deleted handles",
    )
    load = with_config("import", "store the records of a JSON Lines export")
    load.add_argument("file", metavar="FILE", type=Path, help="an export (handle-server export)")
    load.add_argument("--batch", type=_positive, default=1000, help="records per transaction")
    load.add_argument(
        "--replace",
        action="store_true",
        help="replace handles stored with other values (default: stop at the first)",
    )
    history = commands.add_parser(
        "history", help="look after the record history", description="the record history"
    )
    history_commands = history.add_subparsers(dest="history_command", required=True)
    prune_help = (
        "drop the versions [history] keep_versions and keep_days no longer keep (a handle's "
        "latest version always stays)"
    )
    prune = history_commands.add_parser("prune", help=prune_help, description=prune_help)
    prune.add_argument("--config", metavar="FILE", help="TOML configuration")
    prune.add_argument(
        "--keep-versions",
        type=_positive,
        metavar="N",
        help="keep each handle's last N versions (overrides [history] keep_versions)",
    )
    prune.add_argument(
        "--keep-days",
        type=_positive,
        metavar="DAYS",
        help="keep the versions of the last DAYS days (overrides [history] keep_days)",
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
    keygen.add_argument(
        "--native",
        action="store_true",
        help="make the native protocol's key pair ([native] key_file) instead",
    )
    site = with_config(
        "siteinfo",
        "write this server's HS_SITE (what the prefix registry needs to send the Handle "
        "System here)",
    )
    site.add_argument("-o", "--output", metavar="FILE", type=Path, help="default: stdout")
    form = site.add_mutually_exclusive_group()
    form.add_argument(
        "--json", action="store_true", help="the reference's JSON form, not siteinfo.bin"
    )
    form.add_argument(
        "--root-info",
        action="store_true",
        help="a root_info naming this site the root (for clients on a private Handle System)",
    )
    site.add_argument(
        "--public-key",
        metavar="FILE",
        type=Path,
        help="also write the server's public key as the reference encodes it (pubkey.bin)",
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


#: command -> what runs it, given the parsed arguments and the loaded configuration. The
#: handle commands (get, create, ...) are ``admin.ADMIN_ACTIONS``, run by ``admin_command``.
_COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "serve": lambda args, config: serve(config, args.workers),
    "check-config": lambda args, config: check_config(config),
    "migrate": lambda args, config: migrate(config, check=args.check),
    "export": lambda args, config: export(
        config, args.output, args.batch, history=not args.no_history
    ),
    "history": lambda args, config: prune_history(
        config, keep_versions=args.keep_versions, keep_days=args.keep_days
    ),
    "import": lambda args, config: import_(config, args.file, args.batch, args.replace),
    "keygen": lambda args, config: (
        native_keygen(config) if args.native else keygen(config, rekey_admins=args.rekey_admins)
    ),
    "siteinfo": lambda args, config: siteinfo(
        config,
        args.output,
        form="json" if args.json else "root_info" if args.root_info else "bin",
        public_key=args.public_key,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args.config, getattr(args, "host", None), getattr(args, "port", None))
    except ConfigError as exc:
        print(f"handle-server: {exc}", file=sys.stderr)
        return 2
    if args.command in ADMIN_ACTIONS:
        # The server started for the command logs its warnings, not its start-up chatter.
        setup_logging(config, level="debug" if config.log.level == "debug" else "warning")
        return admin_command(args, config)
    setup_logging(config)
    if args.command == "serve" and args.workers < 1:
        print("handle-server: --workers: must be at least 1", file=sys.stderr)
        return 2
    if args.command != "serve" and config.source is None:
        print(f"handle-server {args.command}: --config is needed", file=sys.stderr)
        return 2
    return _COMMANDS[args.command](args, config)
