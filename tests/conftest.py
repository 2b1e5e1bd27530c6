"""Shared fixtures: a real SQLite file per test, the app over real HTTP (pytest-aiohttp)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from handle_server.app import create_app
from handle_server.config import Config, parse_config
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
    return parse_config(raw, source="test-config")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


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


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """Every backend; the contract suite runs once per param."""
    s = await SQLiteStore.open(tmp_path / "store.sqlite3")
    yield s
    await s.close()


def url_value(url: str, index: int = 1, **extra: Any) -> dict[str, Any]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": url}, **extra}
