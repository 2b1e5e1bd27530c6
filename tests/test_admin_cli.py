"""The operator's commands on ``handle-server`` (run as the command runs them, its ``main``):
``check-config``, and ``get``, ``create``, ``delete``, ``list``, ``add-admin`` on a store and
through a server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sqlite3
import ssl
from pathlib import Path

import aiohttp
import orjson
import pytest
import trustme

from handle_server import keys
from handle_server.app import create_app
from handle_server.cli.main import main
from handle_server.native.site import SiteInfo
from storage import open_store

from .helpers import ADMIN, OTHER_ADMIN, OTHER_SECRET, SECRET, write_config


def test_check_config_on_a_store_not_made_yet(tmp_path, capsys):
    table = {"path": str(tmp_path / "new.sqlite3")}
    config = write_config(tmp_path, "c", table)
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "configuration is valid" in out and "prefixes: TEST" in out
    assert "does not exist yet" in out
    assert not Path(table["path"]).exists()  # checking creates nothing


def test_check_config_reports_the_store(tmp_path, capsys, storage_table):
    config = write_config(tmp_path, "c", storage_table)
    assert main(["migrate", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["check-config", "--config", str(config)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_the_native_key_pair_and_site_record(tmp_path, capsys):
    """keygen --native makes the key pair once; siteinfo writes the HS_SITE with its public
    half (binary, JSON, pubkey.bin), and refuses an address nobody could reach."""
    config = write_config(tmp_path, "c", {"path": str(tmp_path / "h.sqlite3")})
    key = tmp_path / "keys" / "native.pem"
    native = f'[native]\nenabled = true\nkey_file = "{key}"\n'
    config.write_text(config.read_text() + native)
    assert main(["keygen", "--native", "--config", str(config)]) == 0
    assert key.stat().st_mode & 0o077 == 0  # the server's alone
    made = key.read_bytes()
    assert main(["keygen", "--native", "--config", str(config)]) == 2  # never replaced
    assert key.read_bytes() == made and "exists" in capsys.readouterr().err
    site, public = tmp_path / "siteinfo.bin", tmp_path / "pubkey.bin"
    assert main(["siteinfo", "--config", str(config), "-o", str(site), "--public-key",
                 str(public)]) == 0  # fmt: skip
    record = SiteInfo.decode(site.read_bytes())
    (server,) = record.servers
    assert (record.serial, record.primary, server.address) == (1, True, "127.0.0.1")
    assert server.public_key == public.read_bytes()
    assert {(i.protocol, i.port, i.kind) for i in server.interfaces} == {
        (1, 2641, 3),  # TCP, administration and queries
        (0, 2641, 2),  # UDP, queries
        (2, 8000, 3),  # HTTP, both
    }
    assert record.encode() == site.read_bytes()
    assert main(["siteinfo", "--config", str(config), "--json", "-o", str(tmp_path / "j")]) == 0
    shown = orjson.loads((tmp_path / "j").read_bytes())
    assert shown["servers"][0]["interfaces"][0] == {
        "query": True, "admin": True, "protocol": "TCP", "port": 2641
    }  # fmt: skip
    assert main(["check-config", "--config", str(config)]) == 0
    assert "HS_SITE serial 1 at 127.0.0.1" in capsys.readouterr().out
    config.write_text(config.read_text().replace("[native]\n", '[native]\nhost = "0.0.0.0"\n'))
    assert main(["siteinfo", "--config", str(config)]) == 2
    assert "public_address" in capsys.readouterr().err


def test_check_config_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "x"\n')
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "[server] port" in capsys.readouterr().err

    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 999")
    config = write_config(tmp_path, "newer", {"path": str(newer)})
    assert main(["check-config", "--config", str(config)]) == 2
    assert "upgrade handle-server" in capsys.readouterr().err

    away = {"backend": "postgresql", "dsn": "postgresql://nobody@127.0.0.1:1/none"}
    config = write_config(tmp_path, "away", away)
    assert main(["check-config", "--config", str(config)]) == 1
    assert "unreachable" in capsys.readouterr().err


# -- get, create, delete, list, add-admin ---------------------------------------------------


async def _with_store(table: dict[str, str], work):
    store = await open_store(
        table.get("backend", "sqlite"), path=table.get("path", ""), dsn=table.get("dsn", "")
    )
    try:
        return await work(store)
    finally:
        await store.close()


def admin_config(tmp_path: Path, storage_table: dict[str, str], name: str = "admin") -> Path:
    """A configuration file with the conftest's prefixes and admins on ``storage_table``."""
    lines = [f'{k} = "{v}"' for k, v in storage_table.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text(
        "[storage]\n" + "\n".join(lines) + '\n[handle]\nprefixes = ["TEST", "10.5555"]\n'
        f'[auth]\nkey_file = "{tmp_path / "secret.key"}"\n'
        f'[[admins]]\nid = "{ADMIN}"\nsecret = "{SECRET}"\n'
        f'[[admins]]\nid = "{OTHER_ADMIN}"\nsecret = "{OTHER_SECRET}"\n'
    )
    return path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``handle-server ARGS`` as the command does; (exit code, stdout, stderr)."""
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_a_handle_made_changed_and_deleted_on_the_store(tmp_path, capsys, storage_table):
    where = ["--config", str(admin_config(tmp_path, storage_table))]
    assert cli(
        capsys, "create", "TEST/a", "--url", "https://a.org", "--value", "EMAIL=p@a.org", *where
    ) == (0, "created TEST/a\n", "")
    status, out, _ = cli(capsys, "get", "TEST/a", *where)
    record = orjson.loads(out)
    assert status == 0 and record["handle"] == "TEST/a"
    assert [(v["index"], v["type"], v["data"]["value"]) for v in record["values"]] == [
        (1, "URL", "https://a.org"),
        (2, "EMAIL", "p@a.org"),
    ]

    status, _, err = cli(capsys, "create", "TEST/a", "--url", "https://b.org", *where)
    assert status == 4 and "already exists" in err  # no overwrite unless asked
    assert cli(capsys, "create", "TEST/a", "--url", "https://b.org", "--overwrite", *where)[:2] == (
        0,
        "replaced TEST/a\n",
    )
    status, out, _ = cli(capsys, "get", "TEST/a", "--type", "URL", *where)
    assert [v["data"]["value"] for v in orjson.loads(out)["values"]] == ["https://b.org"]

    cli(capsys, "create", "TEST/b", "--value", "1:URL=https://b.org", "--value", "7:X=a=b", *where)
    assert cli(capsys, "list", "TEST", *where)[:2] == (0, "TEST/a\nTEST/b\n")
    assert cli(capsys, "list", "0.NA/TEST", "--page", "1", "--page-size", "1", *where)[1] == (
        "TEST/b\n"
    )
    assert cli(capsys, "list", "10.5555", *where) == (0, "", "")
    status, out, _ = cli(capsys, "get", "TEST/b", "--index", "7", *where)
    assert [v["data"]["value"] for v in orjson.loads(out)["values"]] == ["a=b"]

    assert cli(capsys, "delete", "TEST/b", "--index", "7", *where)[:2] == (
        0,
        "removed index 7 of TEST/b\n",
    )
    assert cli(capsys, "delete", "TEST/b", "--index", "7", *where)[0] == 3
    assert cli(capsys, "delete", "TEST/a", *where)[:2] == (0, "deleted TEST/a\n")
    status, out, err = cli(capsys, "get", "TEST/a", *where)
    assert (status, out) == (3, "") and "TEST/a not found" in err
    assert cli(capsys, "delete", "TEST/a", *where)[0] == 3
    assert cli(capsys, "list", "TEST", *where)[1] == "TEST/b\n"

    # Each change is in the handle's history, made by the admin the command acts as.
    async def history(store):
        return (await store.history("TEST/a"))[1]

    versions = asyncio.run(_with_store(storage_table, history))
    assert [(v.operation, v.by) for v in versions] == [
        ("create", ADMIN),
        ("replace", ADMIN),
        ("delete", ADMIN),
    ]


def test_minting_and_values_as_json(tmp_path, capsys, monkeypatch):
    where = ["--config", str(admin_config(tmp_path, {"path": str(tmp_path / "h.sqlite3")}))]
    status, out, _ = cli(capsys, "create", "TEST/", "--url", "https://m.org", *where)
    minted = out.split()[1]
    assert status == 0 and re.fullmatch(r"TEST/[0-9a-f-]{36}", minted)

    private = {"index": 2, "type": "NOTE", "data": "for admins", "permissions": "1100"}
    body = {"values": [{"index": 1, "type": "URL", "data": "https://j.org"}, private]}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(body))))
    assert cli(capsys, "create", "TEST/j", "--json", "-", *where)[0] == 0
    _, out, _ = cli(capsys, "get", "TEST/j", *where)
    assert [v["index"] for v in orjson.loads(out)["values"]] == [1, 2]  # the admin sees all
    _, out, _ = cli(capsys, "get", "TEST/j", "--public", *where)
    assert [v["index"] for v in orjson.loads(out)["values"]] == [1]  # as anyone sees it
    assert sorted(cli(capsys, "list", "TEST", *where)[1].split()) == sorted([minted, "TEST/j"])


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["create", "TEST/x", "--value", "no-equals"], 2, "expected [INDEX:]TYPE=DATA"),
        (["create", "TEST/x"], 2, "give the values"),
        (["create", "TEST/x", "--json", "missing.json"], 2, "No such file"),
        (["create", "TEST/x", "--json", "bad.json"], 2, "not JSON"),
        (["create", "TEST/x", "--json", "bad.json", "--url", "https://x"], 2, "leave out"),
        (["create", "TEST/x", "--value", "0:URL=https://x"], 2, "responseCode 202"),
        (["create", "OTHER/x", "--url", "https://x"], 2, "no [[admins]] entry administers"),
        (["create", "0.NA/TEST", "--url", "https://x", "--overwrite"], 5, "[[admins]]"),
        (["add-admin", "TEST/a", "alice"], 2, "not an identity"),
        (["add-admin", "TEST/a", "300:TEST/alice", "--permissions", "fly"], 2, "unknown"),
        (["add-admin", "TEST/nothing", "300:TEST/alice"], 3, "not found"),
        (["list", "TEST", "--page", "-1"], 2, "must not be negative"),
        (["get", "TEST/a", "--identity", "300:0.NA/TEST"], 2, "go with --server"),
    ],
)
def test_bad_commands_say_why_and_change_nothing(tmp_path, capsys, args, code, says):
    config = admin_config(tmp_path, {"path": str(tmp_path / "h.sqlite3")})
    where = ["--config", str(config)]
    assert cli(capsys, "create", "TEST/a", "--url", "https://a.org", *where)[0] == 0
    before = cli(capsys, "export", *where)[1]
    (tmp_path / "bad.json").write_text("[{")
    with contextlib.chdir(tmp_path):
        status, out, err = cli(capsys, *args, *where)
    assert (status, out) == (code, "")
    assert err.startswith(f"handle-server {args[0]}: ") and says in err
    assert cli(capsys, "export", *where)[1] == before


def test_where_the_command_goes_must_be_said(tmp_path, capsys):
    config = admin_config(tmp_path, {"path": str(tmp_path / "h.sqlite3")})
    both = ["--config", str(config), "--server", "http://127.0.0.1:1"]
    for args in (["get", "TEST/a"], ["get", "TEST/a", *both]):
        status, _, err = cli(capsys, *args)
        assert status == 2 and "give either --config FILE or --server URL" in err


def test_store_failures_on_admin_commands(tmp_path, capsys):
    away = {"backend": "postgresql", "dsn": "postgresql://nobody@127.0.0.1:1/none"}
    status, _, err = cli(capsys, "get", "TEST/a", "--config", str(admin_config(tmp_path, away)))
    assert status == 1 and "unreachable" in err
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 999")
    config = admin_config(tmp_path, {"path": str(newer)}, "newer")
    status, _, err = cli(capsys, "list", "TEST", "--config", str(config))
    assert status == 2 and "upgrade handle-server" in err


async def in_thread(capsys, *args: str) -> tuple[int, str, str]:
    """``cli`` from a thread: the command runs its own event loop, the test's serves."""
    status = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return status, out, err


async def test_through_a_server_with_credentials(
    aiohttp_server, tmp_path, capsys, monkeypatch, config
):
    server = await aiohttp_server(create_app(config))
    url = str(server.make_url("")).rstrip("/")
    anonymous = ["--server", url]
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    admin = [*anonymous, "--identity", ADMIN, "--secret-file", str(secret_file)]

    status, _, err = await in_thread(
        capsys, "create", "TEST/r", "--url", "https://r.org", *anonymous
    )
    assert status == 5 and "Authentication needed" in err
    monkeypatch.setenv("HANDLE_SERVER_SECRET", "wrong")
    status, _, err = await in_thread(
        capsys, "create", "TEST/r", "--url", "https://r.org", *anonymous, "--identity", ADMIN
    )
    assert status == 5 and "Authentication failed" in err
    monkeypatch.setenv("HANDLE_SERVER_SECRET", SECRET)
    assert await in_thread(
        capsys, "create", "TEST/r", "--url", "https://r.org", *anonymous, "--identity", ADMIN
    ) == (0, "created TEST/r\n", "")
    monkeypatch.delenv("HANDLE_SERVER_SECRET")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt
    status, _, err = await in_thread(capsys, "get", "TEST/r", *anonymous, "--identity", ADMIN)
    assert status == 2 and "needs its secret key" in err

    status, out, _ = await in_thread(capsys, "get", "TEST/r", *anonymous)
    assert status == 0 and orjson.loads(out)["values"][0]["data"]["value"] == "https://r.org"
    assert (await in_thread(capsys, "list", "TEST", *anonymous))[0] == 5  # listing needs rights
    assert (await in_thread(capsys, "list", "TEST", *admin))[1] == "TEST/r\n"
    assert (await in_thread(capsys, "delete", "TEST/r", *admin))[:2] == (0, "deleted TEST/r\n")
    assert (await in_thread(capsys, "get", "TEST/r", *anonymous))[0] == 3

    status, _, err = await in_thread(capsys, "get", "TEST/r", "--server", "http://127.0.0.1:1")
    assert status == 1 and "cannot reach http://127.0.0.1:1" in err
    status, _, err = await in_thread(capsys, "get", "TEST/r", "--server", f"{url}/metrics/")
    assert status == 1 and "no Handle API JSON" in err


async def test_a_server_over_tls_with_its_ca(aiohttp_server, tmp_path, capsys, config):
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    server = await aiohttp_server(create_app(config), ssl=server_tls)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    url = str(server.make_url("")).rstrip("/")
    assert url.startswith("https://")
    status, _, err = await in_thread(capsys, "get", "0.NA/TEST", "--server", url)
    assert status == 1 and "certificate" in err.lower()  # an unknown CA is not trusted
    status, out, _ = await in_thread(
        capsys, "get", "0.NA/TEST", "--server", url, "--cafile", str(tmp_path / "ca.pem")
    )
    assert status == 0 and orjson.loads(out)["handle"] == "0.NA/TEST"


async def test_add_admin_gives_an_identity_its_rights(
    aiohttp_server, tmp_path, capsys, monkeypatch, config, storage_table
):
    """A new identity (a handle with an HS_SECKEY) can change a handle only once add-admin
    named it there; add-admin on the prefix handle lets it create handles."""
    server = await aiohttp_server(create_app(config))
    url = str(server.make_url("")).rstrip("/")
    store = ["--config", str(admin_config(tmp_path, storage_table))]
    alice = ["--server", url, "--identity", "300:TEST/alice"]
    monkeypatch.setenv("HANDLE_SERVER_SECRET", "alice-secret")
    (tmp_path / "alice.json").write_text(
        '[{"index": 300, "type": "HS_SECKEY", "data": "alice-secret", "permissions": "1100"}]'
    )
    assert (
        await in_thread(
            capsys, "create", "TEST/alice", "--json", str(tmp_path / "alice.json"), *store
        )
    )[0] == 0
    assert (await in_thread(capsys, "create", "TEST/x", "--url", "https://x.org", *store))[0] == 0

    change = ["create", "TEST/x", "--url", "https://alice.org", "--overwrite"]
    status, _, err = await in_thread(capsys, *change, *alice)
    assert status == 5 and "does not hold" in err
    assert (await in_thread(capsys, "add-admin", "TEST/x", "300:TEST/alice", *store))[:2] == (
        0,
        "added: 300:TEST/alice is an admin of TEST/x at index 100 (011111110011)\n",
    )
    assert (await in_thread(capsys, *change, *alice))[:2] == (0, "replaced TEST/x\n")
    # Replacing the record dropped the HS_ADMIN: add-admin puts it back, at the same index.
    assert (await in_thread(capsys, "add-admin", "TEST/x", "300:TEST/alice", *store))[1].startswith(
        "added"
    )
    again = await in_thread(capsys, "add-admin", "TEST/x", "300:TEST/alice", *store)
    assert again[1].startswith("unchanged: ")
    status, _, err = await in_thread(
        capsys, "add-admin", "TEST/x", "300:TEST/bob", "--index", "100", *store
    )
    assert status == 4 and "already has values at index 100" in err
    status, out, _ = await in_thread(capsys, "add-admin", "TEST/x", "300:TEST/bob", *store)
    assert out.startswith("added: 300:TEST/bob is an admin of TEST/x at index 101 ")

    assert (await in_thread(capsys, "create", "TEST/by-alice", "--url", "https://a", *alice))[
        0
    ] == 5
    status, out, _ = await in_thread(
        capsys, "add-admin", "0.NA/TEST", "300:TEST/alice", "--permissions", "add_handle", *store
    )
    assert status == 0 and "index 101 (000000000001)" in out  # 100 holds the prefix's own
    assert (await in_thread(capsys, "create", "TEST/by-alice", "--url", "https://a", *alice))[
        0
    ] == 0


async def test_writes_on_the_store_reach_a_running_server_at_once(
    aiohttp_server, tmp_path, capsys, config, storage_table
):
    """The server has the record cached; the command writes the store beside it."""
    server = await aiohttp_server(create_app(config))
    store = ["--config", str(admin_config(tmp_path, storage_table))]
    assert (await in_thread(capsys, "create", "TEST/c", "--url", "https://old.org", *store))[0] == 0

    async def served() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/api/handles/TEST/c")) as resp:
                return (await resp.json())["values"][0]["data"]["value"]

    assert await served() == "https://old.org"
    assert await served() == "https://old.org"  # now from the cache
    assert (server.app[keys.SERVICE].cache.stats.hits) >= 1
    change = ["create", "TEST/c", "--url", "https://new.org", "--overwrite", *store]
    assert (await in_thread(capsys, *change))[0] == 0
    # SQLite: at once (the change log is read on the next read). PostgreSQL: as soon as the
    # NOTIFY arrives, shortly after the commit.
    deadline = asyncio.get_running_loop().time() + 10
    while (got := await served()) != "https://new.org":
        assert asyncio.get_running_loop().time() < deadline, got
        assert storage_table.get("backend") == "postgresql", got  # SQLite never waits
        await asyncio.sleep(0.01)
