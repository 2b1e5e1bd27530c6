"""Configuration: a TOML file read into frozen dataclasses.

Every option has a default here and a line in ``config.example.toml``; an unknown table or key,
a value of the wrong type or out of range stops start-up with a ``ConfigError`` naming the file,
the table and the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "HandleServiceConfig",
    "OnezoneConfig",
    "load_config",
    "parse_config",
]

PREFIX_HANDLE_AUTHORITY = "0.NA"
_PREFIX_RE = re.compile(r"^[^\s/\x00-\x1f\x7f]+$")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_ACCESS_FORMATS = ("combined", "common", "json")
_EVENT_LOOPS = ("asyncio", "uvloop")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file, table and key."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1_048_576
    max_concurrent_requests: int = 1024
    idle_timeout: int = 75
    body_timeout: int = 60
    header_timeout: int = 10
    max_connections: int = 4096
    tls_cert: str = ""
    tls_key: str = ""
    event_loop: str = "asyncio"
    public_url: str = ""
    trusted_proxies: tuple[str, ...] = ()

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
    backend: str = "sqlite"
    path: str = "var/handles.sqlite3"
    dsn: str = ""


@dataclass(frozen=True, slots=True)
class HandleConfig:
    prefixes: tuple[str, ...] = ()
    max_handle_length: int = 1024
    max_values: int = 1000
    max_value_bytes: int = 524_288
    max_record_bytes: int = 1_048_576
    max_location_bytes: int = 65_536


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
    max_entries: int = 100_000
    max_bytes: int = 268_435_456
    max_ttl: int = 86_400
    not_found_ttl: int = 5


@dataclass(frozen=True, slots=True)
class AuthConfig:
    key_file: str = "var/secret.key"
    failure_limit: int = 10
    failure_window: int = 300
    session_idle_timeout: int = 1800
    max_sessions: int = 100_000
    max_sessions_per_identity: int = 100


@dataclass(frozen=True, slots=True)
class SearchConfig:
    max_conditions: int = 10
    timeout: int = 5
    max_concurrent: int = 2


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    per_prefix_counts: bool = False


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    access: bool = True
    access_format: str = "combined"


@dataclass(frozen=True, slots=True)
class HandleServiceConfig:
    """A Onezone handle service: Onezone users register the handles of their shares in it."""

    id: str
    name: str
    prefix: str


@dataclass(frozen=True, slots=True)
class OnezoneConfig:
    api_base: str = "/api/v3/onezone"
    proxy_base: str = "/onedata/v1"
    share_url_template: str = "https://onezone.example.org/share/{resourceId}"
    public_handle_base: str = "https://hdl.handle.net"
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
    metrics: MetricsConfig = MetricsConfig()
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
    "metrics": MetricsConfig,
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


def _build(cls: type, table: dict[str, Any], source: str, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{source}: {where} {key}: unknown key (known: {known})")
        expected = fields[key].type
        if expected == "bool":
            ok = isinstance(value, bool)
        elif expected == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected == "str":
            ok = isinstance(value, str)
        elif expected == "tuple[str, ...]":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        elif key == "handle_services":
            raise ConfigError(f"{source}: {where} {key}: must be an array of tables")
        else:  # pragma: no cover - a new field type needs a branch here
            raise AssertionError(f"unhandled config type {expected}")
        if not ok:
            wanted = {
                "bool": "true or false",
                "int": "an integer",
                "str": "a string",
                "tuple[str, ...]": "an array of strings",
            }[expected]
            raise ConfigError(f"{source}: {where} {key}: must be {wanted}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _check(config: Config, source: str) -> None:
    def fail(where: str, message: str) -> None:
        raise ConfigError(f"{source}: {where}: {message}")

    s = config.server
    if not s.host:
        fail("[server] host", "must not be empty")
    if not 0 <= s.port <= 65535:
        fail("[server] port", f"must be between 0 and 65535, got {s.port}")
    if s.max_body_bytes < 1024:
        fail("[server] max_body_bytes", f"must be at least 1024, got {s.max_body_bytes}")
    if s.max_concurrent_requests < 1:
        fail(
            "[server] max_concurrent_requests",
            f"must be at least 1, got {s.max_concurrent_requests}",
        )
    for key in ("idle_timeout", "body_timeout", "header_timeout"):
        if not 1 <= getattr(s, key) <= 86400:
            fail(f"[server] {key}", f"must be between 1 and 86400 seconds, got {getattr(s, key)}")
    if s.max_connections < 16:
        fail("[server] max_connections", f"must be at least 16, got {s.max_connections}")
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
    if s.event_loop not in _EVENT_LOOPS:
        fail("[server] event_loop", f'must be "asyncio" or "uvloop", got {s.event_loop!r}')
    st = config.storage
    if st.backend not in ("sqlite", "postgresql"):
        fail("[storage] backend", f'must be "sqlite" or "postgresql", got {st.backend!r}')
    if st.backend == "sqlite" and not st.path:
        fail("[storage] path", "must not be empty")
    if st.backend == "postgresql" and not st.dsn.startswith(("postgresql://", "postgres://")):
        fail("[storage] dsn", f'must be a "postgresql://..." URL, got {st.dsn!r}')
    if config.handle.max_handle_length < 16:
        fail(
            "[handle] max_handle_length",
            f"must be at least 16, got {config.handle.max_handle_length}",
        )
    if config.handle.max_values < 1:
        fail("[handle] max_values", f"must be at least 1, got {config.handle.max_values}")
    if config.handle.max_value_bytes < 1024:
        fail(
            "[handle] max_value_bytes",
            f"must be at least 1024, got {config.handle.max_value_bytes}",
        )
    if config.handle.max_record_bytes < config.handle.max_value_bytes:
        fail(
            "[handle] max_record_bytes",
            f"must be at least max_value_bytes ({config.handle.max_value_bytes}), "
            f"got {config.handle.max_record_bytes}",
        )
    if config.handle.max_location_bytes < 1024:
        fail(
            "[handle] max_location_bytes",
            f"must be at least 1024, got {config.handle.max_location_bytes}",
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
    c = config.cache
    for key in ("max_entries", "max_bytes", "max_ttl", "not_found_ttl"):
        if getattr(c, key) < 0:
            fail(f"[cache] {key}", f"must not be negative, got {getattr(c, key)}")
    if bool(s.tls_cert) != bool(s.tls_key):
        fail("[server] tls_cert", "tls_cert and tls_key go together: give both or neither")
    for key in ("tls_cert", "tls_key"):
        path = getattr(s, key)
        if path and not Path(path).is_file():
            fail(f"[server] {key}", f"no such file {path!r}")
    a = config.auth
    if not a.key_file:
        fail("[auth] key_file", "must not be empty")
    if a.failure_limit < 0:
        fail("[auth] failure_limit", f"must not be negative, got {a.failure_limit}")
    for key in (
        "failure_window",
        "session_idle_timeout",
        "max_sessions",
        "max_sessions_per_identity",
    ):
        if getattr(a, key) < 1:
            fail(f"[auth] {key}", f"must be at least 1, got {getattr(a, key)}")
    for key in ("max_conditions", "timeout", "max_concurrent"):
        if getattr(config.search, key) < 1:
            fail(f"[search] {key}", f"must be at least 1, got {getattr(config.search, key)}")
    _check_onezone(config, seen, fail)
    if config.log.level not in _LOG_LEVELS:
        fail("[log] level", f"must be one of {', '.join(_LOG_LEVELS)}, got {config.log.level!r}")
    if config.log.access_format not in _ACCESS_FORMATS:
        fail(
            "[log] access_format",
            f"must be one of {', '.join(_ACCESS_FORMATS)}, got {config.log.access_format!r}",
        )


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
