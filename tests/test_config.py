"""The configuration file: the example covers every option and works; mistakes are named."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from handle_server.cli.main import main
from handle_server.config import (
    Config,
    ConfigError,
    HandleServiceConfig,
    OnezoneConfig,
    load_config,
)

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


#: The tables of plain options (``[[admins]]`` and ``[onezone]`` are checked apart).
OPTION_TABLES = (
    "resolver",
    "server",
    "storage",
    "handle",
    "cache",
    "auth",
    "search",
    "batch",
    "history",
    "metrics",
    "native",
    "log",
)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_the_example_lists_every_option_with_the_default():
    raw = tomllib.loads(EXAMPLE.read_text())
    defaults = Config()
    for table in OPTION_TABLES:
        cls = type(getattr(defaults, table))
        assert set(raw[table]) == _fields(cls), table
        for key, value in raw[table].items():
            if (table, key) != ("handle", "prefixes"):  # the example homes TEST; default: none
                default = getattr(getattr(defaults, table), key)
                assert (tuple(value) if isinstance(value, list) else value) == default, (
                    table,
                    key,
                )
    assert set(raw["admins"][0]) == {"id", "secret"}
    onezone = dict(raw["onezone"])
    services = onezone.pop("handle_services")
    assert set(services[0]) == _fields(HandleServiceConfig)
    assert set(onezone) | {"handle_services"} == _fields(OnezoneConfig)
    for key, value in onezone.items():
        assert value == getattr(defaults.onezone, key), ("onezone", key)
    assert set(raw) == _fields(Config) - {"source"}


def _example_help() -> dict[tuple[str, str], str]:
    """(table, key) -> the comment after the key in the example, continuation lines joined."""
    helps: dict[tuple[str, str], str] = {}
    table, last = "", None
    for line in EXAMPLE.read_text().splitlines():
        if match := re.match(r"^\[+([\w.]+)\]+", line):
            table, last = match.group(1), None
        elif match := re.match(r"^(\w+) = .*?\s+# (.*)$", line):
            last = (table, match.group(1))
            helps[last] = match.group(2)
        elif (match := re.match(r"^\s{10,}# (.*)$", line)) and last is not None:
            helps[last] += " " + match.group(1)
        else:
            last = None
    return helps


def test_the_example_shows_each_options_declared_help():
    """One declaration per option: the help beside each key in the example is the one the
    option declares (``config.option``)."""
    helps = _example_help()
    defaults = Config()
    for table in OPTION_TABLES:
        for f in dataclasses.fields(getattr(defaults, table)):
            assert helps.get((table, f.name)) == f.metadata["help"], (table, f.name)
    for f in dataclasses.fields(OnezoneConfig):
        if f.name != "handle_services":
            assert helps.get(("onezone", f.name)) == f.metadata["help"], f.name


def test_the_example_loads():
    config = load_config(EXAMPLE)
    assert config.handle.prefixes == ("TEST",)
    assert config.admins[0].id == "300:0.NA/TEST" and config.admins[0].prefix == "TEST"
    assert "change-me" not in repr(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = 'eighty'", "[server] port: must be an integer"),
        ("[server]\nport = 70000", "[server] port: must be between 0 and 65535"),
        ("[server]\nmax_body_bytes = 10", "[server] max_body_bytes: must be at least 1024"),
        ("[server]\nhots = 'x'", "[server] hots: unknown key"),
        ("[server]\nevent_loop = 'trio'", '[server] event_loop: must be "asyncio" or "uvloop"'),
        ("[storage]\nbackend = 'oracle'", '[storage] backend: must be "sqlite" or "postgresql"'),
        ("[storage]\nbackend = 'postgresql'", '[storage] dsn: must be a "postgresql://..." URL'),
        ("[storage]\npath = ''", "[storage] path: must not be empty"),
        ("[handle]\nprefixes = 'TEST'", "[handle] prefixes: must be an array of strings"),
        ("[handle]\nprefixes = ['A/B']", "[handle] prefixes: 'A/B' is not a prefix"),
        ("[handle]\nprefixes = ['T', 't']", "[handle] prefixes: 't' is listed twice"),
        ("[handle]\nprefixes = ['0.NA']", "[handle] prefixes: '0.NA' is reserved"),
        ("[log]\nlevel = 'loud'", "[log] level: must be one of"),
        ("[nope]\na = 1", "unknown table [nope]"),
        (
            "[[admins]]\nid = '300:0.NA/TEST'\nsecret = 's'",
            "[[admins]] #1 id: prefix 'TEST' is not among [handle] prefixes",
        ),
        (
            "[handle]\nprefixes = ['TEST']\n[[admins]]\nid = '0.NA/TEST'\nsecret = 's'",
            "[[admins]] #1 id: must be index:handle",
        ),
        (
            "[handle]\nprefixes = ['TEST']\n[[admins]]\nid = '300:TEST/x'\nsecret = 's'",
            "[[admins]] #1 id: the handle must be a prefix handle",
        ),
        (
            "[handle]\nprefixes = ['TEST']\n[[admins]]\nid = '200:0.NA/TEST'\nsecret = 's'",
            "[[admins]] #1 id: index 200",
        ),
        (
            "[handle]\nprefixes = ['TEST']\n[[admins]]\nid = '300:0.NA/TEST'",
            "[[admins]] #1 secret: missing",
        ),
        (
            "[handle]\nprefixes = ['TEST']\n[[admins]]\nid = '300:0.NA/TEST'\nsecret = ''",
            "[[admins]] #1 secret: must not be empty",
        ),
        (
            "[handle]\nprefixes = ['TEST']\n[[admins]]\nid = '300:0.NA/TEST'\nsecret = 'a'\n"
            "[[admins]]\nid = '300:0.NA/test'\nsecret = 'b'",
            "[[admins]] #2 id: '300:0.NA/test' is listed twice",
        ),
        ("[server\n", "not valid TOML"),
        ("[onezone]\napi_base = 'api/v3'", "[onezone] api_base: must be"),
        ("[onezone]\nproxy_base = '/api/proxy'", "[onezone] proxy_base: must not be under /api"),
        ("[onezone]\nproxy_base = '/x/'", "[onezone] proxy_base: must be"),
        ("[onezone]\nshare_url_template = 'https://oz/share'", "must be an http(s) URL holding"),
        ("[onezone]\npublic_handle_base = 'hdl.handle.net'", "[onezone] public_handle_base"),
        (
            "[handle]\nprefixes = ['net']\n[onezone]\npublic_handle_base = 'https://hdl.handle.net'",
            "contains 'net'/",
        ),
        ("[onezone]\nhandle_services = 3", "handle_services must be an array of tables"),
        ("[[onezone.handle_services]]\nid = 'a'\nname = 'A'", "#1 prefix: missing"),
        (
            "[[onezone.handle_services]]\nid = 'a'\nname = 'A'\nprefix = 'NOPE'",
            "[[onezone.handle_services]] #1 prefix: 'NOPE' is not among [handle] prefixes",
        ),
        (
            "[handle]\nprefixes = ['T']\n[[onezone.handle_services]]\nid = 'a b'\nname = 'A'\n"
            "prefix = 'T'",
            "#1 id: must be 1-128 letters",
        ),
        (
            "[handle]\nprefixes = ['T']\n[[onezone.handle_services]]\nid = 'a'\nname = 'A'\n"
            "prefix = 'T'\n[[onezone.handle_services]]\nid = 'a'\nname = 'B'\nprefix = 'T'",
            "#2 id: 'a' is listed twice",
        ),
        ("[onezone]\nhost = 'x'", "[onezone] host: unknown key"),
    ],
)
def test_a_bad_config_names_file_table_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_serve_stops_on_a_bad_config_with_the_message(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 'x'\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert f"{path}: [server] port: must be an integer" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
