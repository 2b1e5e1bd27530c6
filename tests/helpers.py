"""What the tests share: the configuration and credentials they run with, real HTTP calls
(``Api``), the server as a process (``Server``), session proofs, config files, HS_ADMIN and
HS_VLIST values, and the Onezone requests. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from handle_server.config import Config, parse_config
from handle_server.encoding import AdminPermission as P
from handle_server.onezone.service import handle_id_of

ADMIN = "300:0.NA/TEST"

SECRET = "admin-secret"

OTHER_ADMIN = "300:0.NA/10.5555"

OTHER_SECRET = "other-secret"


def basic(identity: str, secret: str, *, safe: str = "") -> dict[str, str]:
    """The Basic header Handle.Net clients send: the identity percent-encoded."""
    token = base64.b64encode(f"{quote(identity, safe=safe)}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN_AUTH = basic(ADMIN, SECRET)

OTHER_AUTH = basic(OTHER_ADMIN, OTHER_SECRET)


def make_config(tmp_path: Path, **tables: Any) -> Config:
    raw: dict[str, Any] = {
        "storage": {"path": str(tmp_path / "handles.sqlite3")},
        "handle": {"prefixes": ["TEST", "10.5555"]},
        "admins": [
            {"id": ADMIN, "secret": SECRET},
            {"id": OTHER_ADMIN, "secret": OTHER_SECRET},
        ],
    }
    raw.update(tables)
    raw["auth"] = {"key_file": str(tmp_path / "secret.key"), **tables.get("auth", {})}
    return parse_config(raw, source="test-config")


BACKENDS = ["sqlite", "postgresql"]


class Api:
    """Real HTTP calls against the test server; each returns (status, JSON body)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.client.request(method, path, **kwargs) as resp:
            raw = await resp.read()
            self.last = resp
            return resp.status, (await resp.json(content_type=None) if raw else None)

    async def get(self, handle: str, *, params: Any = None, headers: Any = None):
        return await self._call("GET", f"/api/handles/{handle}", params=params, headers=headers)

    async def put(
        self,
        handle: str,
        body: Any,
        *,
        params: Any = None,
        headers: Any = ADMIN_AUTH,
        content_type: str = "application/json",
        raw: bytes | None = None,
    ):
        data = raw if raw is not None else orjson.dumps(body)
        hdrs = {"Content-Type": content_type, **(headers or {})}
        return await self._call(
            "PUT", f"/api/handles/{handle}", params=params, headers=hdrs, data=data
        )

    async def delete(self, handle: str, *, params: Any = None, headers: Any = ADMIN_AUTH):
        return await self._call("DELETE", f"/api/handles/{handle}", params=params, headers=headers)

    async def list(self, params: Any, *, headers: Any = ADMIN_AUTH):
        return await self._call("GET", "/api/handles", params=params, headers=headers)

    async def values(self, handle: str) -> Any:
        """The full record as an admin sees it (None when absent)."""
        status, body = await self.get(handle, params={"publicOnly": "false"}, headers=ADMIN_AUTH)
        return body["values"] if status == 200 else None


def url_value(url: str, index: int = 1, **extra: Any) -> dict[str, Any]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": url}, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args: list[str], cwd: Path, *, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.log = cwd / f"server-{self.port}.log"
        self._output = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "handle_server", "serve", *args, "--port", str(self.port)],
            cwd=cwd,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, wait_seconds: float = 20) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited: {self.log.read_text()}")
                try:
                    async with session.get(f"{self.base}/api/handles/0.NA/TEST", ssl=self.tls):
                        return
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._output.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._output.close()


def sign(secret: str, derivation: dict[str, Any], nonce_b64: str) -> tuple[str, str]:
    """What a client computes: the key from the secret, then an HMAC of nonce || cnonce."""
    key = hashlib.pbkdf2_hmac(
        "sha256", secret.encode(), base64.b64decode(derivation["salt"]), derivation["iterations"]
    )
    cnonce = os.urandom(16)
    mac = hmac.new(key, base64.b64decode(nonce_b64) + cnonce, hashlib.sha256).digest()
    return base64.b64encode(cnonce).decode(), base64.b64encode(mac).decode()


def handle_header(session_id: str, **fields: str) -> dict[str, str]:
    params = [f'sessionId="{session_id}"'] + [f'{k}="{v}"' for k, v in fields.items()]
    return {"Authorization": "Handle " + ", ".join(params)}


async def open_session(api: Api, identity: str | None = None) -> dict[str, Any]:
    body = {"id": identity} if identity else None
    status, session = await api._call("POST", "/api/sessions", json=body)
    assert status == 201 and api.last.headers["Location"] == "/api/sessions/this"
    return session


async def prove(api: Api, session: dict, identity: str, secret: str) -> tuple[int, Any]:
    cnonce, signature = sign(secret, session["keyDerivation"], session["nonce"])
    headers = handle_header(
        session["sessionId"],
        version="0",
        id=quote(identity, safe=""),
        type="HS_SECKEY",
        alg="PBKDF2-HMAC-SHA256",
        cnonce=cnonce,
        signature=signature,
    )
    return await api._call("PUT", "/api/sessions/this", headers=headers)


def reference_signature(alg: str, secret: str, nonce_b64: str) -> tuple[str, str]:
    """What the reference's clients compute from the secret itself."""
    key, nonce, cnonce = secret.encode(), base64.b64decode(nonce_b64), os.urandom(16)
    if alg.startswith("HMAC-"):
        mac = hmac.new(key, nonce + cnonce, alg.removeprefix("HMAC-").replace("-", "")).digest()
    else:
        mac = hashlib.new(alg.replace("-", ""), key + nonce + cnonce + key).digest()
    return base64.b64encode(cnonce).decode(), base64.b64encode(mac).decode()


def write_config(tmp_path: Path, name: str, storage_table: dict[str, str]) -> Path:
    lines = [f'{k} = "{v}"' for k, v in storage_table.items()]  # the conftest's [storage]
    path = tmp_path / f"{name}.toml"
    path.write_text(
        "[storage]\n" + "\n".join(lines) + '\n[handle]\nprefixes = ["TEST"]\n'
        f'[auth]\nkey_file = "{tmp_path / "secret.key"}"\n'
    )
    return path


def sqlite_table(tmp_path: Path, name: str) -> dict[str, str]:
    return {"backend": "sqlite", "path": str(tmp_path / f"{name}.sqlite3")}


ALL = P.all().to_string()


def admin(handle: str, index: int, perms: str = ALL, at: int = 100) -> dict[str, Any]:
    return {
        "index": at,
        "type": "HS_ADMIN",
        "data": {
            "format": "admin",
            "value": {"handle": handle, "index": index, "permissions": perms},
        },
    }


def vlist(at: int, *members: tuple[str, int]) -> dict[str, Any]:
    refs = [{"handle": h, "index": i} for h, i in members]
    return {"index": at, "type": "HS_VLIST", "data": {"format": "vlist", "value": refs}}


def seckey(at: int, secret: str) -> dict[str, Any]:
    return {"index": at, "type": "HS_SECKEY", "data": secret, "permissions": "1100"}


API = "/api/v3/onezone"

PROXY = "/onedata/v1"

SHARE = "f7a6d2ea511e728c9b3f3972cecb7af4"

SHARE_URL = f"https://onezone.example.org/share/{SHARE}"

HID = handle_id_of("Share", SHARE)

# The Dublin Core example of the Onezone REST reference (its doc-generator escaping undone).
DC_RDF = (
    '<?xml version="1.0"?> <!DOCTYPE rdf:RDF SYSTEM '
    '"http://dublincore.org/2000/12/01-dcmes-xml-dtd.dtd"> '
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"\n'
    '         xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
    '  <rdf:Description rdf:about="http://example.com/resouces/1">\n'
    "    <dc:title>Example Resource</dc:title>\n"
    "    <dc:creator>John Doe</dc:creator>\n"
    "    <dc:publisher>MIT</dc:publisher>\n"
    "    <dc:date>2000-06-06</dc:date>\n"
    "  </rdf:Description>\n"
    "</rdf:RDF>"
)

# The form current Onezone sends (a <metadata> root), with non-ASCII text.
DC_METADATA = (
    '<metadata xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
    "    <dc:title>Données de forage — 2024</dc:title>\n"
    "    <dc:creator>Jan Kowalski</dc:creator>\n"
    "</metadata>"
)

# The JSON Onezone's handle_proxy.erl and hps-b2handle work with.
PROPERTIES = {
    "type": "PID",
    "endpoint": "https://pid.example.org/api/handles",
    "prefix": "TEST",
    "username": ADMIN,
    "password": SECRET,
    "allowTemplateOverride": False,
}


def registration(**changes: Any) -> dict[str, Any]:
    body = {
        "handleServiceId": "hs-test",
        "resourceType": "Share",
        "resourceId": SHARE,
        "metadata": DC_RDF,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def proxy_body(url: str = SHARE_URL, metadata: str = DC_METADATA, **properties: Any) -> dict:
    return {
        "url": url,
        "serviceProperties": {**PROPERTIES, **properties},
        "metadata": {"onedata_dc": metadata},
    }


PG_DSN_VARIABLE = "HANDLE_SERVER_TEST_PG_DSN"


def pg_execute(dsn: str, statement: str) -> None:
    """Run one statement on its own connection, from a thread with its own event loop (the
    fixtures asking for a schema may run inside the test's loop)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
