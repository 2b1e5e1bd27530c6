"""Configuration: a TOML file read into frozen dataclasses.

Every option has a default here and a line in ``config.example.toml``; an unknown table or key,
a value of the wrong type or out of range stops start-up with a ``ConfigError`` naming the file,
the table and the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import sys
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import PREFIX_HANDLE_AUTHORITY

__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "HandleServiceConfig",
    "OnezoneConfig",
    "load_config",
    "parse_config",
]

_PREFIX_RE = re.compile(r"^[^\s/\x00-\x1f\x7f]+$")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_ACCESS_FORMATS = ("combined", "common", "json")
_EVENT_LOOPS = ("asyncio", "uvloop")
#: uvloop is a dependency wherever it builds (not on Windows): the default there.
_DEFAULT_LOOP = "asyncio" if sys.platform == "win32" else "uvloop"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file, table and key."""


def option(
    default: Any,
    help: str,
    *,
    min: int | None = None,
    max: int | None = None,
    choices: tuple[str, ...] = (),
    nonempty: bool = False,
    unit: str = "",
) -> Any:
    """One option's whole declaration: its default, the line of help ``config.example.toml``
    shows for it, and the bounds every value is checked against (``_check_options``)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "nonempty": nonempty}
    return field(default=default, metadata={**meta, "unit": unit})


_SECONDS = {"min": 1, "max": 86_400, "unit": " seconds"}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = option("127.0.0.1", "address to listen on; --host overrides it", nonempty=True)
    port: int = option(8000, "port to listen on; --port overrides it", min=0, max=65535)
    max_body_bytes: int = option(
        1_048_576, "a PUT body larger than this is refused with 413 (min 1024)", min=1024
    )
    max_concurrent_requests: int = option(
        1024, "requests handled at once per process; more get 503 + Retry-After", min=1
    )
    idle_timeout: int = option(
        75, "seconds before closing a connection that sends no (whole) request", **_SECONDS
    )
    body_timeout: int = option(
        60, "seconds a client has to send a request body; slower gets 408", **_SECONDS
    )
    header_timeout: int = option(
        10,
        "seconds a client has to send a request's line and headers once it has begun one; "
        "slower is disconnected",
        **_SECONDS,
    )
    max_connections: int = option(
        4096,
        "open connections per process; at the limit the longest-idle keep-alive connections "
        "are closed (the open-files limit is raised to its hard limit at start-up, min 16)",
        min=16,
    )
    tls_cert: str = option("", 'PEM certificate (chain) file: with tls_key, serve HTTPS; "" = HTTP')
    tls_key: str = option("", "PEM private key file of tls_cert")
    event_loop: str = option(
        _DEFAULT_LOOP,
        '"uvloop" (faster) or "asyncio" (the default on Windows, where uvloop does not build)',
        choices=_EVENT_LOOPS,
    )
    public_url: str = option(
        "",
        "how clients reach this server, for the absolute URLs it writes "
        '(e.g. "https://hdl.example.org"); "" = http(s)://host:port',
    )
    trusted_proxies: tuple[str, ...] = option(
        (),
        "addresses or CIDR blocks of reverse proxies whose X-Forwarded-For names the client "
        "(for throttling and logs)",
    )

    @property
    def base_url(self) -> str:
        """Where clients reach this server: ``public_url``, else this host and port (never
        the Host header a request brings)."""
        if self.public_url:
            return self.public_url
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = option(
        "sqlite",
        '"sqlite" (embedded, one machine) or "postgresql" (shared by many nodes)',
        choices=("sqlite", "postgresql"),
    )
    path: str = option(
        "var/handles.sqlite3",
        'the SQLite file (its folder is created); default "var/handles.sqlite3"',
    )
    dsn: str = option("", 'PostgreSQL: "postgresql://user:password@host:5432/database"')


@dataclass(frozen=True, slots=True)
class HandleConfig:
    prefixes: tuple[str, ...] = option(
        (), "the prefixes this server homes (default: none, every handle refused)"
    )
    max_handle_length: int = option(1024, "longest handle accepted, in UTF-8 bytes", min=16)
    max_values: int = option(
        1000, "values one handle may hold; a write beyond it gets 400 (min 1)", min=1
    )
    max_value_bytes: int = option(
        524_288,
        "data bytes one value may hold; more gets 400 (min 1024; a Onezone share's metadata "
        "takes up to 400,000)",
        min=1024,
    )
    max_record_bytes: int = option(
        1_048_576,
        "type and data bytes of all of one handle's values; a write beyond it gets 413 and "
        "changes nothing (min max_value_bytes)",
    )
    max_location_bytes: int = option(
        65_536, "data bytes of a 10320/loc value (a location list); more gets 400", min=1024
    )


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """An administrator identity ``index:0.NA/PREFIX`` and its secret key."""

    id: str
    secret: str = field(repr=False)

    @property
    def index(self) -> int:
        return int(self.id.split(":", 1)[0])

    @property
    def handle(self) -> str:
        return self.id.split(":", 1)[1]

    @property
    def prefix(self) -> str:
        """The prefix this admin administers: ``0.NA/TEST`` administers ``TEST``."""
        return self.handle.split("/", 1)[1]


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_entries: int = option(100_000, "records kept at most", min=0)
    max_bytes: int = option(268_435_456, "memory the cached records may take, about (bytes)", min=0)
    max_ttl: int = option(
        86_400,
        "ceiling on how long a record is cached (seconds); 0 turns the cache off",
        min=0,
    )
    not_found_ttl: int = option(
        5, 'how long "handle not found" is remembered (seconds); a create clears it', min=0
    )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    key_file: str = option(
        "var/secret.key",
        "the server key secret keys are kept encrypted with (made at the first start)",
        nonempty=True,
    )
    failure_limit: int = option(
        10, "failures of one identity from one address before 429; 0 turns it off", min=0
    )
    failure_window: int = option(300, "seconds the failures are counted over", min=1)
    session_idle_timeout: int = option(
        1800, "an /api/sessions session unused this long ends (seconds)", min=1
    )
    max_sessions: int = option(
        100_000,
        "proved or closed sessions kept at most (closed ones, then the ones that would "
        "expire first, go first)",
        min=1,
    )
    max_sessions_per_identity: int = option(
        100,
        "sessions one identity may have proved at once; proving one more ends its own "
        "oldest, never anybody else's",
        min=1,
    )


@dataclass(frozen=True, slots=True)
class SearchConfig:
    max_conditions: int = option(
        10, "TYPE=pattern conditions in one search (repeats merged); more gets 400", min=1
    )
    timeout: int = option(
        5, "seconds one search may run; longer is stopped and answered 503", min=1
    )
    max_concurrent: int = option(
        2, "searches run at once per process; others wait their turn", min=1
    )


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_operations: int = option(
        10_000,
        "operations in one JSON batch (POST /api/batch); more gets 413 (NDJSON batches "
        "stream, unbounded)",
        min=1,
    )
    max_body_bytes: int = option(
        33_554_432, "a JSON batch body larger than this is refused with 413", min=1024
    )
    in_flight: int = option(
        512,
        "operations of one batch read and decided together (one store read and one commit "
        "for all); an NDJSON batch holds at most this many in memory",
        min=1,
        max=10_000,
    )


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    keep_versions: int = option(
        0,
        "versions of each handle's history kept, the latest ones; 0 = all of them",
        min=0,
    )
    keep_days: int = option(
        0,
        "days a version is kept (a handle's latest version always stays: its numbers go on, "
        "and a deleted handle's tombstone stays); 0 = for ever",
        min=0,
    )
    prune_every: int = option(
        3600,
        "when keep_versions or keep_days bounds the history, the server drops what they no "
        "longer keep this often (handle-server history prune does it at once)",
        **_SECONDS,
    )

    @property
    def bounded(self) -> bool:
        return bool(self.keep_versions or self.keep_days)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    per_prefix_counts: bool = option(
        False,
        "/metrics shows how many handles each prefix has (which the listing API tells only "
        "to those holding LIST_HANDLES)",
    )


@dataclass(frozen=True, slots=True)
class NativeConfig:
    enabled: bool = option(
        False,
        "serve the Handle System's native protocol (RFC 3652): over TCP, and as POSTs of "
        "application/x-hdl-message to the HTTP port",
    )
    host: str = option("", 'address of the native interfaces; "" = [server] host')
    port: int = option(
        2641, "port of the native interfaces (the Handle System's is 2641)", min=0, max=65535
    )
    tcp: bool = option(True, "serve native messages over TCP")
    udp: bool = option(
        True,
        "serve native messages over UDP (answers of one datagram only: no amplification)",
    )
    udp_rate: int = option(
        1000,
        "UDP answers a second to one source address; over it, every other request gets a "
        "short refusal (the client turns to TCP) and the rest nothing",
        min=1,
    )
    max_message_bytes: int = option(
        262_144, "longest native message accepted (the reference's limit)", min=1024
    )
    timeout: int = option(30, "seconds a native client has to send a whole message", **_SECONDS)
    key_file: str = option(
        "var/native_key.pem",
        "the server's key pair (PEM, RSA or DSA): signs certified answers, and its public half "
        "is in this site's HS_SITE (made at the first start, or by keygen --native)",
        nonempty=True,
    )
    public_address: str = option(
        "",
        "the IP address the Handle System reaches this server at, for its HS_SITE; "
        '"" = the native host, if that is one address',
    )
    site_serial: int = option(
        1,
        "serial number of this site's HS_SITE: raise it whenever the site changes",
        min=0,
        max=65535,
    )
    challenge_timeout: int = option(
        20, "seconds a native client has to answer an authentication challenge", **_SECONDS
    )


_RESOLVER_MODES = ("local", "global")


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    mode: str = option(
        "local",
        "local: answer for the prefixes homed here only; global: resolve any other handle "
        "through the Handle System, as hdl.handle.net does",
        choices=_RESOLVER_MODES,
    )
    root_info: str = option(
        "",
        "the root sites for global mode (a root_info, a siteinfo.bin or its JSON form); "
        '"" = the Global Handle Registry, as the reference ships it',
    )
    timeout: int = option(
        20, "seconds a global resolution may take, mirrors included, before 504", **_SECONDS
    )
    allow_prefixes: tuple[str, ...] = option(
        (),
        "global mode resolves only these prefixes and those derived from them (10.1000 "
        "covers 10.1000.5); empty: all",
    )
    deny_prefixes: tuple[str, ...] = option(
        (), "global mode never resolves these prefixes, nor those derived from them"
    )
    certify: bool = option(
        False,
        "ask upstream servers to sign their answers and check each signature with the "
        "server's public key in its HS_SITE; an answer that does not verify counts as none",
    )
    upstream_concurrency: int = option(
        16,
        "requests this process may have at one upstream server at once; more wait their "
        "turn (within the timeout)",
        min=1,
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = option("info", "debug, info, warning or error", choices=_LOG_LEVELS)
    access: bool = option(True, "log every request (at info level)")
    access_format: str = option(
        "combined",
        "combined or common (Apache/NCSA formats), or json (one object per line, alone, for "
        "log shippers)",
        choices=_ACCESS_FORMATS,
    )


@dataclass(frozen=True, slots=True)
class HandleServiceConfig:
    """A Onezone handle service: Onezone users register the handles of their shares in it."""

    id: str
    name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class OnezoneConfig:
    api_base: str = option(
        "/api/v3/onezone", 'where the Onezone handle API is served; "" turns it off'
    )
    proxy_base: str = option(
        "/onedata/v1", 'where the handle-proxy contract is served; "" turns it off'
    )
    share_url_template: str = option(
        "https://onezone.example.org/share/{resourceId}",
        "a share's public URL: the handle's URL value",
    )
    public_handle_base: str = option(
        "https://hdl.handle.net", "public handle = <this>/<prefix>/<suffix> (no trailing /)"
    )
    handle_services: tuple[HandleServiceConfig, ...] = ()

    def handle_service(self, service_id: str) -> HandleServiceConfig | None:
        for service in self.handle_services:
            if service.id == service_id:
                return service
        return None


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    handle: HandleConfig = HandleConfig()
    admins: tuple[AdminConfig, ...] = ()
    cache: CacheConfig = CacheConfig()
    auth: AuthConfig = AuthConfig()
    search: SearchConfig = SearchConfig()
    batch: BatchConfig = BatchConfig()
    history: HistoryConfig = HistoryConfig()
    metrics: MetricsConfig = MetricsConfig()
    native: NativeConfig = NativeConfig()
    resolver: ResolverConfig = ResolverConfig()
    log: LogConfig = LogConfig()
    onezone: OnezoneConfig = OnezoneConfig()
    #: Where the configuration was read from (``None`` for the built-in defaults).
    source: str | None = None

    def replace(self, **tables: Any) -> Config:
        return dataclasses.replace(self, **tables)


_TABLES = {
    "server": ServerConfig,
    "storage": StorageConfig,
    "handle": HandleConfig,
    "cache": CacheConfig,
    "auth": AuthConfig,
    "search": SearchConfig,
    "batch": BatchConfig,
    "history": HistoryConfig,
    "metrics": MetricsConfig,
    "native": NativeConfig,
    "resolver": ResolverConfig,
    "log": LogConfig,
}


def load_config(path: str | Path) -> Config:
    """Read and check the TOML file at ``path``."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    return parse_config(raw, source=name)


def parse_config(raw: dict[str, Any], *, source: str = "<config>") -> Config:
    """Check a parsed TOML document and build the ``Config``."""
    tables: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "admins":
            continue
        if key == "onezone":
            continue
        if key not in _TABLES:
            known = ", ".join(sorted([*_TABLES, "admins", "onezone"]))
            raise ConfigError(f"{source}: unknown table [{key}] (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{key}] must be a table")
        tables[key] = _build(_TABLES[key], value, source, f"[{key}]")
    if isinstance(raw.get("onezone"), dict):
        tables["onezone"] = _onezone(raw["onezone"], source)
    config = Config(**tables, source=source)
    admins_raw = raw.get("admins", [])
    if not isinstance(admins_raw, list):
        raise ConfigError(f"{source}: admins must be an array of tables ([[admins]])")
    admins = []
    for n, entry in enumerate(admins_raw):
        where = f"[[admins]] #{n + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: {where} must be a table")
        for required in ("id", "secret"):
            if required not in entry:
                raise ConfigError(f"{source}: {where} {required}: missing")
        admins.append(_build(AdminConfig, entry, source, where))
    config = config.replace(admins=tuple(admins))
    _check(config, source)
    return config


def _onezone(raw: Any, source: str) -> OnezoneConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [onezone] must be a table")
    services_raw = raw.get("handle_services", [])
    if not isinstance(services_raw, list):
        raise ConfigError(
            f"{source}: [onezone] handle_services must be an array of tables "
            "([[onezone.handle_services]])"
        )
    services = []
    for n, entry in enumerate(services_raw):
        where = f"[[onezone.handle_services]] #{n + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: {where} must be a table")
        for required in ("id", "name", "prefix"):
            if required not in entry:
                raise ConfigError(f"{source}: {where} {required}: missing")
        services.append(_build(HandleServiceConfig, entry, source, where))
    plain = {k: v for k, v in raw.items() if k != "handle_services"}
    built = _build(OnezoneConfig, plain, source, "[onezone]")
    return dataclasses.replace(built, handle_services=tuple(services))


#: What a value of each option type must be in TOML, and how to tell.
_KINDS: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
    tuple[str, ...]: (
        "an array of strings",
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    ),
}


def _build(cls: type, table: dict[str, Any], source: str, where: str) -> Any:
    types = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{source}: {where} {key}: unknown key (known: {', '.join(known)})")
        if types[key] not in _KINDS:  # handle_services, an array of tables, is read apart
            raise ConfigError(f"{source}: {where} {key}: must be an array of tables")
        wanted, fits = _KINDS[types[key]]
        if not fits(value):
            raise ConfigError(f"{source}: {where} {key}: must be {wanted}, got {value!r}")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def _check_options(table: str, values: Any, fail: Callable[[str, str], None]) -> None:
    """Each option of ``values`` (the table ``[table]``) within what it declares."""
    for f in dataclasses.fields(values):
        meta, value, where = f.metadata, getattr(values, f.name), f"[{table}] {f.name}"
        if not meta:
            continue
        if meta["nonempty"] and not value:
            fail(where, "must not be empty")
        choices = meta["choices"]
        if choices and value not in choices:
            if len(choices) == 2:
                fail(where, f'must be "{choices[0]}" or "{choices[1]}", got {value!r}')
            fail(where, f"must be one of {', '.join(choices)}, got {value!r}")
        low, high, unit = meta["min"], meta["max"], meta["unit"]
        if low is not None and high is not None and not low <= value <= high:
            fail(where, f"must be between {low} and {high}{unit}, got {value}")
        if low is not None and high is None and value < low:
            fail(
                where,
                f"must be at least {low}, got {value}"
                if low
                else f"must not be negative, got {value}",
            )


def _check(config: Config, source: str) -> None:
    def fail(where: str, message: str) -> None:
        raise ConfigError(f"{source}: {where}: {message}")

    for table in (*_TABLES, "onezone"):
        _check_options(table, getattr(config, table), fail)
    s = config.server
    if s.public_url and (
        not s.public_url.startswith(("https://", "http://")) or s.public_url.endswith("/")
    ):
        fail(
            "[server] public_url",
            f"must be an http(s) URL without a trailing /, got {s.public_url!r}",
        )
    for block in s.trusted_proxies:
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            fail("[server] trusted_proxies", f"{block!r} is not an address or CIDR block")
    st = config.storage
    if st.backend == "sqlite" and not st.path:
        fail("[storage] path", "must not be empty")
    if st.backend == "postgresql" and not st.dsn.startswith(("postgresql://", "postgres://")):
        fail("[storage] dsn", f'must be a "postgresql://..." URL, got {st.dsn!r}')
    if config.handle.max_record_bytes < config.handle.max_value_bytes:
        fail(
            "[handle] max_record_bytes",
            f"must be at least max_value_bytes ({config.handle.max_value_bytes}), "
            f"got {config.handle.max_record_bytes}",
        )
    seen: set[str] = set()
    for prefix in config.handle.prefixes:
        if not _PREFIX_RE.match(prefix):
            fail(
                "[handle] prefixes",
                f"{prefix!r} is not a prefix (no '/', white space or control characters)",
            )
        if prefix.upper() == PREFIX_HANDLE_AUTHORITY:
            fail("[handle] prefixes", f"{prefix!r} is reserved for prefix handles")
        if prefix.upper() in seen:
            fail("[handle] prefixes", f"{prefix!r} is listed twice")
        seen.add(prefix.upper())
    ids: set[tuple[str, int]] = set()
    for n, admin in enumerate(config.admins):
        where = f"[[admins]] #{n + 1}"
        index, sep, handle = admin.id.partition(":")
        if not sep or not index.isdigit() or int(index) <= 0 or int(index) > 2**31 - 1:
            fail(f"{where} id", f"must be index:handle with a positive index, got {admin.id!r}")
        authority, slash, prefix = handle.partition("/")
        if not slash or authority.upper() != PREFIX_HANDLE_AUTHORITY:
            fail(f"{where} id", f"the handle must be a prefix handle 0.NA/<prefix>, got {handle!r}")
        if prefix.upper() not in seen:
            fail(
                f"{where} id",
                f"prefix {prefix!r} is not among [handle] prefixes {list(config.handle.prefixes)}",
            )
        if int(index) == 200:
            fail(f"{where} id", "index 200 of a prefix handle holds the HS_VLIST of its admins")
        if (prefix.upper(), int(index)) in ids:
            fail(f"{where} id", f"{admin.id!r} is listed twice")
        ids.add((prefix.upper(), int(index)))
        if not admin.secret:
            fail(f"{where} secret", "must not be empty")
    if config.native.public_address:
        try:
            ipaddress.ip_address(config.native.public_address)
        except ValueError:
            fail(
                "[native] public_address",
                f"must be an IP address (the Handle System's site records hold addresses), "
                f"got {config.native.public_address!r}",
            )
    if config.resolver.root_info and not Path(config.resolver.root_info).is_file():
        fail("[resolver] root_info", f"no such file {config.resolver.root_info!r}")
    if bool(s.tls_cert) != bool(s.tls_key):
        fail("[server] tls_cert", "tls_cert and tls_key go together: give both or neither")
    for key in ("tls_cert", "tls_key"):
        path = getattr(s, key)
        if path and not Path(path).is_file():
            fail(f"[server] {key}", f"no such file {path!r}")
    _check_onezone(config, seen, fail)


_ONEZONE_BASE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_SERVICE_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


def _check_onezone(config: Config, prefixes: set[str], fail: Any) -> None:
    o = config.onezone
    for key in ("api_base", "proxy_base"):
        base = getattr(o, key)
        if base and not _ONEZONE_BASE.match(base):
            fail(
                f"[onezone] {key}",
                f'must be "" (off) or a path like "/onedata/v1" (no trailing /), got {base!r}',
            )
    if o.proxy_base and o.proxy_base.split("/")[1] == "api":
        fail("[onezone] proxy_base", "must not be under /api (the Handle API lives there)")
    if o.api_base and o.proxy_base and o.api_base == o.proxy_base:
        fail("[onezone] proxy_base", "must differ from api_base")
    if "{resourceId}" not in o.share_url_template or not o.share_url_template.startswith(
        ("https://", "http://")
    ):
        fail(
            "[onezone] share_url_template",
            "must be an http(s) URL holding {resourceId}, got " + repr(o.share_url_template),
        )
    base = o.public_handle_base
    if not base.startswith(("https://", "http://")) or base.endswith("/"):
        fail(
            "[onezone] public_handle_base",
            f"must be an http(s) URL without a trailing /, got {base!r}",
        )
    for prefix in config.handle.prefixes:
        # Onezone finds the suffix of a public handle by splitting it (case-sensitively) at the
        # first "<prefix>/": the base must not hold one.
        if f"{prefix}/" in base + "/":
            fail(
                "[onezone] public_handle_base",
                f"{base!r} contains {prefix!r}/: Onezone could not find the suffix in "
                "the handles it returns",
            )
    ids: set[str] = set()
    for n, service in enumerate(o.handle_services):
        where = f"[[onezone.handle_services]] #{n + 1}"
        if not _SERVICE_ID.match(service.id):
            fail(f"{where} id", f"must be 1-128 letters, digits or ._~-, got {service.id!r}")
        if service.id in ids:
            fail(f"{where} id", f"{service.id!r} is listed twice")
        ids.add(service.id)
        if not service.name:
            fail(f"{where} name", "must not be empty")
        if service.prefix.upper() not in prefixes:
            fail(
                f"{where} prefix",
                f"{service.prefix!r} is not among [handle] prefixes {list(config.handle.prefixes)}",
            )
