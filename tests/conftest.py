"""Shared fixtures: a real SQLite file or a fresh schema on a real PostgreSQL server per test,
the app over real HTTP (pytest-aiohttp).

PostgreSQL comes from ``HANDLE_SERVER_TEST_PG_DSN`` (``.ci/run`` sets it). Without it the
postgresql params are skipped, with the reason shown, except under CI, where they fail."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from handle_server.app import create_app
from handle_server.config import Config, parse_config
from storage import HandleStore
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore

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
PG_DSN_VARIABLE = "HANDLE_SERVER_TEST_PG_DSN"


def _pg_execute(dsn: str, statement: str) -> None:
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


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """The DSN of a fresh, empty schema on the test PostgreSQL server, dropped afterwards."""
    base = os.environ.get(PG_DSN_VARIABLE)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_DSN_VARIABLE} is not set: CI must test PostgreSQL")
        pytest.skip(f"{PG_DSN_VARIABLE} is not set: no PostgreSQL to test")
    schema = "t_" + uuid.uuid4().hex
    _pg_execute(base, f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}search_path={schema}"
    _pg_execute(base, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def storage_table(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The [storage] table of a test's configuration, once per backend."""
    if request.param == "postgresql":
        return {"backend": "postgresql", "dsn": request.getfixturevalue("pg_dsn")}
    return {"path": str(tmp_path / "handles.sqlite3")}


@pytest.fixture
def config(tmp_path: Path, storage_table: dict[str, str]) -> Config:
    return make_config(tmp_path, storage=storage_table)


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


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> Any:
    return await aiohttp_client(create_app(config))


@pytest.fixture
def api(client: Any) -> Api:
    return Api(client)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HandleStore]:
    """Every backend; the contract suite runs once per param."""
    s: HandleStore
    if request.param == "postgresql":
        s = await PostgresStore.open(request.getfixturevalue("pg_dsn"))
    else:
        s = await SQLiteStore.open(tmp_path / "store.sqlite3")
    yield s
    await s.close()


def url_value(url: str, index: int = 1, **extra: Any) -> dict[str, Any]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": url}, **extra}
