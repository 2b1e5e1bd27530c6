"""The operator's handle commands (``get``, ``create``, ``delete``, ``list``, ``add-admin``).

Each speaks the Handle REST API, so it obeys exactly the rules a client meets: either to a
running server (``--server URL``, as an identity proving its secret key), or to a server this
command starts for itself on the configured store (``--config FILE``), listening only on a Unix
socket in a private folder, where it acts as the prefix's configured admin. Writes made that
way are seen at once by servers running on the same store (see ``HandleStore.watch``)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import getpass
import os
import re
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from storage import SchemaMismatch, StoreUnavailable, handle_key

from ..app import create_app
from ..auth.authorizer import Authorizer
from ..config import AdminConfig, Config
from ..encoding import AdminPermission
from .stores import store_failure

__all__ = [
    "EXIT_EXISTS",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "AdminFailed",
    "HandleApi",
    "add_admin",
    "local_api",
    "parse_permissions",
    "parse_values",
    "remote_api",
]

EXIT_OK = 0
EXIT_UNREACHABLE = 1  # the store or server could not be reached, or failed
EXIT_USAGE = 2  # the command, its configuration or its values are wrong
EXIT_NOT_FOUND = 3  # the handle (or a value) does not exist
EXIT_EXISTS = 4  # the handle (or a value at that index) already exists
EXIT_REFUSED = 5  # no credentials, wrong ones, or no right to do it

#: HS_ADMIN permissions ``add-admin`` grants unless told: what pyhandle and the reference's
#: tools give a handle's admin (everything but the derived-prefix and list rights).
DEFAULT_ADMIN_PERMISSIONS = "011111110011"
FIRST_ADMIN_INDEX = 100
_ADMIN_INDEX_ATTEMPTS = 50
_INDEX_AND_TYPE = re.compile(r"(?:(?P<index>[0-9]+):)?(?P<type>[^=]+)=(?P<data>.*)", re.DOTALL)


class AdminFailed(Exception):
    """A command that could not be done: the message for the operator and the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


#: Handle responseCodes with an exit code of their own (the HTTP status may be 400 for them).
_CODE_EXITS = {
    100: EXIT_NOT_FOUND,
    200: EXIT_NOT_FOUND,
    101: EXIT_EXISTS,
    201: EXIT_EXISTS,
    400: EXIT_REFUSED,
    401: EXIT_REFUSED,
    402: EXIT_REFUSED,
    403: EXIT_REFUSED,
}


def exit_code_for(status: int, response_code: Any = None) -> int:
    if response_code in _CODE_EXITS:
        return _CODE_EXITS[response_code]
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_EXISTS
    if status in (401, 403, 429):
        return EXIT_REFUSED
    if 400 <= status < 500:
        return EXIT_USAGE
    return EXIT_UNREACHABLE


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


class HandleApi:
    """Calls on the Handle REST API at ``base``; a refusal raises ``AdminFailed`` with the
    server's message and the exit code its HTTP status stands for."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, authorization: str | None
    ) -> None:
        self._session = session
        self._base = base.rstrip("/")
        self._headers = {"Authorization": authorization} if authorization else {}
        self.authenticated = authorization is not None
        self.where = self._base

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Any = None,
        accept: Sequence[int] = (),
    ) -> Answer:
        """One request; statuses below 300 and those in ``accept`` are answers."""
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        try:
            async with self._session.request(
                method, self._base + path, params=list(params), data=data, headers=headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except aiohttp.ClientError as exc:
            raise AdminFailed(f"cannot reach {self.where}: {exc}", EXIT_UNREACHABLE) from None
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict) or "responseCode" not in parsed:
            raise AdminFailed(
                f"{self.where} answered {method} {path} with HTTP {status} and no Handle API "
                "JSON (is it a handle server?)",
                EXIT_UNREACHABLE,
            )
        if status < 300 or status in accept:
            return Answer(status, parsed)
        raise AdminFailed(_refusal(status, parsed), exit_code_for(status, parsed["responseCode"]))

    @staticmethod
    def handle_path(handle: str) -> str:
        return "/api/handles/" + quote(handle, safe="/")

    async def get(self, handle: str, params: Sequence[tuple[str, str]] = ()) -> dict:
        return (await self.call("GET", self.handle_path(handle), params=params)).body

    async def put(
        self, handle: str, values: list[Any], params: Sequence[tuple[str, str]]
    ) -> Answer:
        return await self.call("PUT", self.handle_path(handle), params=params, body=values)

    async def delete(self, handle: str, indexes: Sequence[int] = ()) -> dict:
        params = [("index", str(i)) for i in indexes]
        return (await self.call("DELETE", self.handle_path(handle), params=params)).body

    async def list(self, prefix: str, page: int | None, page_size: int) -> dict:
        params = [("prefix", prefix)]
        if page is not None:
            params += [("page", str(page)), ("pageSize", str(page_size))]
        return (await self.call("GET", "/api/handles", params=params)).body


def _refusal(status: int, body: dict[str, Any]) -> str:
    message = body.get("message") or "refused"
    return f"{message} (HTTP {status}, responseCode {body['responseCode']})"


# -- where the commands go ------------------------------------------------------------------


def basic_authorization(identity: str, secret: str) -> str:
    """HTTP Basic as Handle.Net clients send it: the identity percent-encoded."""
    token = f"{quote(identity, safe='')}:{secret}".encode()
    return "Basic " + base64.b64encode(token).decode("ascii")


@contextlib.asynccontextmanager
async def remote_api(
    url: str, identity: str | None, secret: str | None, *, cafile: Path | None = None
) -> AsyncIterator[HandleApi]:
    """The API of the server at ``url``; with ``identity``, every call proves it."""
    tls: ssl.SSLContext | bool = True
    if cafile is not None:
        try:
            tls = ssl.create_default_context(cafile=str(cafile))
        except (OSError, ssl.SSLError) as exc:
            raise AdminFailed(f"--cafile {cafile}: {exc}", EXIT_USAGE) from None
    authorization = basic_authorization(identity, secret or "") if identity else None
    connector = aiohttp.TCPConnector(ssl=tls)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield HandleApi(session, url, authorization)


def config_admin(config: Config, prefix: str) -> AdminConfig:
    """The first configured admin of ``prefix``: who a command on the store acts as."""
    wanted = handle_key(prefix)
    for admin in config.admins:
        if handle_key(admin.prefix) == wanted:
            return admin
    raise AdminFailed(
        f"{config.source}: no [[admins]] entry administers prefix {prefix}: add one, or run "
        "the command against a server with --server and an identity that may",
        EXIT_USAGE,
    )


def administered_prefix(handle_or_prefix: str) -> str:
    """``TEST`` for ``TEST/x``, ``0.NA/TEST`` and ``TEST``."""
    if "/" not in handle_or_prefix:
        return handle_or_prefix
    return Authorizer.administered_prefix(handle_or_prefix)


@contextlib.asynccontextmanager
async def local_api(config: Config, prefix: str) -> AsyncIterator[HandleApi]:
    """The API served on the configured store for the length of one command: the app
    ``serve`` runs, on a Unix socket in a folder only this user can enter, called as the
    first configured admin of ``prefix``. Store failures (``StoreUnavailable``,
    ``SchemaMismatch``) come out of here as ``serve`` meets them."""
    admin = config_admin(config, prefix)
    runner = web.AppRunner(create_app(config), access_log=None, handle_signals=False)
    try:
        await runner.setup()  # inside: what started before a failure (the store) is closed
        with tempfile.TemporaryDirectory(prefix="handle-server-") as folder:
            socket = str(Path(folder) / "api.sock")
            await web.UnixSite(runner, socket).start()
            connector = aiohttp.UnixConnector(path=socket)
            async with aiohttp.ClientSession(connector=connector) as session:
                api = HandleApi(
                    session, "http://localhost", basic_authorization(admin.id, admin.secret)
                )
                api.where = _store_name(config)
                yield api
    finally:
        await runner.cleanup()


def _store_name(config: Config) -> str:
    if config.storage.backend == "sqlite":
        return config.storage.path
    return "the PostgreSQL store"


# -- what the commands send ---------------------------------------------------------------


def parse_values(specs: Sequence[str], urls: Sequence[str]) -> list[dict[str, Any]]:
    """``--url URL`` and ``--value [INDEX:]TYPE=DATA`` -> REST values with string data. Values
    without an index take the lowest free ones from 1, in the order given (URLs first)."""
    given: list[tuple[int | None, str, str]] = [(None, "URL", url) for url in urls]
    for spec in specs:
        match = _INDEX_AND_TYPE.fullmatch(spec)
        if match is None or not match["type"].strip():
            raise AdminFailed(
                f"--value {spec!r}: expected [INDEX:]TYPE=DATA, e.g. URL=https://example.org "
                "or 2:EMAIL=pid@example.org",
                EXIT_USAGE,
            )
        index = int(match["index"]) if match["index"] is not None else None
        given.append((index, match["type"].strip(), match["data"]))
    taken = {index for index, _, _ in given if index is not None}
    values = []
    free = 1
    for index, type_, data in given:
        if index is None:
            while free in taken:
                free += 1
            index = free
            taken.add(index)
        values.append({"index": index, "type": type_, "data": {"format": "string", "value": data}})
    return values


def parse_permissions(text: str) -> str:
    """``011111110011``, ``all``, or names such as ``add_value,modify_value`` -> the twelve
    characters the REST API takes."""
    text = text.strip()
    if text.lower() == "all":
        return AdminPermission.all().to_string()
    if re.fullmatch(r"[01]{12}", text):
        return text
    permissions = AdminPermission(0)
    for name in filter(None, (part.strip() for part in text.split(","))):
        try:
            permissions |= AdminPermission[name.upper().replace("-", "_")]
        except KeyError:
            known = ", ".join(p.name.lower() for p in AdminPermission if p.name)
            raise AdminFailed(
                f"--permissions: unknown permission {name!r}; give 12 characters of 0 and 1, "
                f"'all', or names among: {known}",
                EXIT_USAGE,
            ) from None
    if not permissions:
        raise AdminFailed("--permissions: no permission given", EXIT_USAGE)
    return permissions.to_string()


async def add_admin(
    api: HandleApi,
    handle: str,
    identity: str,
    permissions: str,
    *,
    index: int | None = None,
) -> tuple[str, int]:
    """Give ``identity`` (``index:handle``) the HS_ADMIN ``permissions`` on ``handle``: its
    existing HS_ADMIN value is updated, else a new one is added at ``index`` or the first free
    index from 100. Returns what was done (``added``, ``updated``, ``unchanged``) and the
    index."""
    owner_index, colon, owner = identity.partition(":")
    if not colon or not owner_index.isdigit() or not owner:
        raise AdminFailed(
            f"{identity!r} is not an identity: expected INDEX:HANDLE, e.g. 300:0.NA/TEST",
            EXIT_USAGE,
        )
    admin = {"handle": owner, "index": int(owner_index), "permissions": permissions}
    existing = await api.get(handle, [("type", "HS_ADMIN"), ("auth", "true")])
    for value in existing.get("values", []):
        shown = value.get("data", {}).get("value", {})
        same_handle = handle_key(str(shown.get("handle", ""))) == handle_key(owner)
        if same_handle and str(shown.get("index")) == str(int(owner_index)):
            if index is not None and index != value["index"]:
                raise AdminFailed(
                    f"{identity} is already an admin of {handle}, at index {value['index']}",
                    EXIT_EXISTS,
                )
            if shown.get("permissions") == permissions:
                return "unchanged", value["index"]
            await _put_admin(api, handle, value["index"], admin, overwrite=True)
            return "updated", value["index"]
    candidates = [index] if index is not None else range(FIRST_ADMIN_INDEX, 2**31)
    for attempt, candidate in enumerate(candidates):
        if attempt == _ADMIN_INDEX_ATTEMPTS:
            break
        answer = await _put_admin(api, handle, candidate, admin, overwrite=False)
        if answer.status < 300:
            return "added", candidate
        if index is not None:  # the index asked for is taken
            raise AdminFailed(_refusal(answer.status, answer.body), EXIT_EXISTS)
    raise AdminFailed(
        f"no free index among {FIRST_ADMIN_INDEX}-{FIRST_ADMIN_INDEX + _ADMIN_INDEX_ATTEMPTS - 1} "
        f"of {handle}: give one with --index",
        EXIT_EXISTS,
    )


async def _put_admin(
    api: HandleApi, handle: str, index: int, admin: Mapping[str, Any], *, overwrite: bool
) -> Answer:
    """PUT one HS_ADMIN value at ``index``; without ``overwrite`` a taken index (HTTP 409) is
    an answer, not a failure: values the caller cannot read are not shown to it."""
    accept = () if overwrite else (409,)
    value = {"index": index, "type": "HS_ADMIN", "data": {"format": "admin", "value": admin}}
    params = [("index", str(index)), ("overwrite", "true" if overwrite else "false")]
    return await api.call(
        "PUT", api.handle_path(handle), params=params, body=[value], accept=accept
    )


# -- the commands, as argparse hands them over --------------------------------------------------


SECRET_VARIABLE = "HANDLE_SERVER_SECRET"


def admin_command(args: argparse.Namespace, config: Config) -> int:
    """Run one of the handle commands (``ADMIN_ACTIONS``) where ``args`` send it (see
    ``handle_server.admin``)."""
    action = ADMIN_ACTIONS[args.command]

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
        return store_failure(exc)


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


ADMIN_ACTIONS = {
    "get": _get,
    "create": _create,
    "delete": _delete,
    "list": _list,
    "add-admin": _add_admin,
}
