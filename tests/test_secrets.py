"""Secret keys at rest: kept encrypted with a server key outside the store, so the store (an
export, a backup) alone authenticates no one; secrets an earlier version stored hashed still
log in and are kept anew; a node with another key file refuses to start."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from handle_server import keys
from handle_server.app import create_app
from handle_server.auth.secrets import SecretKeeper
from handle_server.cli.main import main
from handle_server.cli.transfer import export_to_path
from storage import Handle, HandleValue
from storage.sqlite import SQLiteStore

from .helpers import Api, basic, handle_header, make_config, open_session, reference_signature, sign

USER = "300:TEST/USER01"


def legacy_hash(secret: str, iterations: int = 1000) -> bytes:
    """A secret as versions before the server key stored it."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return b"$".join(
        [
            b"pbkdf2-sha256",
            str(iterations).encode(),
            base64.b64encode(salt),
            base64.b64encode(digest),
        ]
    )


async def put_stored(app, handle: str, data: bytes) -> None:
    """Write an HS_SECKEY's stored form straight into the store, as an old version left it."""
    value = HandleValue(300, "HS_SECKEY", data, timestamp=1, public_read=False)
    await app[keys.STORE].update(handle, lambda before: Handle(handle, (value,)))


@pytest.fixture
async def served(aiohttp_client, tmp_path, storage_table):
    app = create_app(make_config(tmp_path, storage=storage_table))
    return app, Api(await aiohttp_client(app))


async def test_a_legacy_hashed_secret_logs_in_and_is_kept_anew(served):
    app, api = served
    await put_stored(app, "TEST/USER01", legacy_hash("user-pass"))
    assert (await api.get("TEST/x", headers=basic(USER, "wrong")))[0] == 401
    assert (await api.get("TEST/x", headers=basic(USER, "user-pass")))[0] == 404  # in
    stored = (await app[keys.STORE].get("TEST/USER01")).value_at(300).data
    assert stored.startswith(b"aes256gcm$")  # kept in today's form at its first use
    assert (await api.get("TEST/x", headers=basic(USER, "user-pass")))[0] == 404
    assert (await api.get("TEST/x", headers=basic(USER, "wrong")))[0] == 401


async def test_a_legacy_hashed_secret_proves_a_session_with_its_derivation(served):
    app, api = served
    await put_stored(app, "TEST/USER01", legacy_hash("user-pass"))
    session = await open_session(api, USER)
    assert session["keyDerivation"]["iterations"] == 1000
    cnonce, signature = sign("user-pass", session["keyDerivation"], session["nonce"])
    headers = handle_header(
        session["sessionId"], id=quote(USER, safe=""), type="HS_SECKEY",
        alg="PBKDF2-HMAC-SHA256", cnonce=cnonce, signature=signature,
    )  # fmt: skip
    status, body = await api._call("PUT", "/api/sessions/this", headers=headers)
    assert status == 200 and body["id"] == USER


async def test_a_planted_costly_legacy_hash_is_not_taken(served):
    """Only forms this server made verify: a hash of ten million iterations (seconds of CPU
    per guess) left in an old store is refused without being computed."""
    app, api = served
    await put_stored(app, "TEST/USER01", legacy_hash("user-pass", iterations=10_000_000 // 1000))
    await put_stored(app, "TEST/USER02", b"pbkdf2-sha256$10000000$c2FsdA==$" + b"A" * 43 + b"=")
    assert (await api.get("TEST/x", headers=basic("300:TEST/USER02", "x")))[0] == 401


async def test_the_stored_form_alone_authenticates_no_one(served):
    app, api = served
    status, _ = await api.put("TEST/USER01", [{"index": 300, "type": "HS_SECKEY", "data": "pw"}])
    assert status == 201
    stored = (await app[keys.STORE].get("TEST/USER01")).value_at(300).data.decode()
    # As a password, and as the key of every signature a client can send.
    assert (await api.get("TEST/x", headers=basic(USER, stored)))[0] == 401
    for alg in ("HMAC-SHA256", "SHA256", "PBKDF2-HMAC-SHA256"):
        session = await open_session(api, USER)
        if alg.startswith("PBKDF2"):
            key = base64.b64decode(stored.split("$")[2])  # as the old scheme's hash was used
            cnonce = os.urandom(8)
            mac = hmac.new(key, base64.b64decode(session["nonce"]) + cnonce, "sha256").digest()
            cnonce_b64, signature = (
                base64.b64encode(cnonce).decode(),
                base64.b64encode(mac).decode(),
            )
        else:
            cnonce_b64, signature = reference_signature(alg, stored, session["nonce"])
        headers = handle_header(
            session["sessionId"], id=quote(USER, safe=""), type="HS_SECKEY", alg=alg,
            cnonce=cnonce_b64, signature=signature,
        )  # fmt: skip
        assert (await api._call("PUT", "/api/sessions/this", headers=headers))[0] == 401
    # The secret itself works, of course.
    assert (await api.get("TEST/x", headers=basic(USER, "pw")))[0] == 404


def test_keygen_makes_a_private_key_file_and_never_replaces_one(tmp_path, capsys):
    config = tmp_path / "c.toml"
    key = tmp_path / "keys" / "server.key"
    config.write_text(f'[auth]\nkey_file = "{key}"\n[storage]\npath = "{tmp_path / "h.db"}"\n')
    assert main(["keygen", "--config", str(config)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    assert main(["keygen", "--config", str(config)]) == 2
    assert "is not replaced" in capsys.readouterr().err and key.read_bytes() == first


@pytest.mark.slow
def test_a_node_with_another_key_file_refuses_to_start(tmp_path):
    config = tmp_path / "c.toml"
    key = tmp_path / "server.key"
    config.write_text(
        f'[auth]\nkey_file = "{key}"\n[storage]\npath = "{tmp_path / "h.db"}"\n'
        '[handle]\nprefixes = ["TEST"]\n[[admins]]\nid = "300:0.NA/TEST"\nsecret = "s3cret"\n'
    )
    assert main(["keygen", "--config", str(config), "--rekey-admins"]) == 0  # key and admins
    key.unlink()
    assert main(["keygen", "--config", str(config)]) == 0  # another key: the first is lost

    def serve() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "handle_server", "serve", "--config", str(config), "--port",
             "0"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip

    refused = serve()
    assert refused.returncode == 2, refused.stderr
    assert "every node on one store needs the same key file" in refused.stderr
    assert "Traceback" not in refused.stderr
    # The operator who lost the key keeps the admins' secrets anew, and the node starts.
    assert main(["keygen", "--config", str(config), "--rekey-admins"]) == 0

    async def stored() -> bytes:
        store = await SQLiteStore.open(tmp_path / "h.db")
        try:
            return (await store.get("0.NA/TEST")).value_at(300).data
        finally:
            await store.close()

    assert SecretKeeper.from_key_file(key).matches(b"s3cret", asyncio.run(stored()))


async def test_an_export_holds_no_usable_secret(served, tmp_path):
    app, api = served
    await api.put("TEST/USER01", [{"index": 300, "type": "HS_SECKEY", "data": "pw-in-export"}])
    path = tmp_path / "export.jsonl"
    await export_to_path(app[keys.STORE], Path(path), batch=100)
    text = path.read_text()
    assert "pw-in-export" not in text and "aes256gcm$" in text


def test_check_config_reports_the_server_key(tmp_path, capsys):
    config = tmp_path / "c.toml"
    key = tmp_path / "server.key"
    config.write_text(f'[auth]\nkey_file = "{key}"\n[storage]\npath = "{tmp_path / "h.db"}"\n')
    assert main(["check-config", "--config", str(config)]) == 0
    assert "does not exist yet" in capsys.readouterr().out
    assert main(["keygen", "--config", str(config)]) == 0
    assert main(["check-config", "--config", str(config)]) == 0
    assert "key id " in capsys.readouterr().out
    key.write_text("not a key\n")
    assert main(["check-config", "--config", str(config)]) == 2
    assert "not a handle-server key file" in capsys.readouterr().err


def test_key_files_made_at_once_are_whole_and_one(tmp_path):
    """Workers (or nodes on a shared folder) starting together: one key file, whole, for
    all of them."""
    key = tmp_path / "server.key"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: SecretKeeper.load_or_make(key), range(32)))
    assert sum(1 for _, new in made if new) == 1
    assert len({keeper.key_id for keeper, _ in made}) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["server.key"]  # no leftovers
