"""Shared fixtures: a real SQLite file or a fresh schema on a real PostgreSQL server per test,
the app over real HTTP (pytest-aiohttp).

PostgreSQL comes from ``HANDLE_SERVER_TEST_PG_DSN`` (``.ci/run`` sets it). Without it the
postgresql params are skipped, with the reason shown, except under CI, where they fail."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from handle_server.app import create_app
from handle_server.config import Config
from storage import HandleStore
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore

from .helpers import BACKENDS, PG_DSN_VARIABLE, Api, make_config, pg_execute


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """The DSN of a fresh, empty schema on the test PostgreSQL server, dropped afterwards."""
    base = os.environ.get(PG_DSN_VARIABLE)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_DSN_VARIABLE} is not set: CI must test PostgreSQL")
        pytest.skip(f"{PG_DSN_VARIABLE} is not set: no PostgreSQL to test")
    schema = "t_" + uuid.uuid4().hex
    pg_execute(base, f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}search_path={schema}"
    pg_execute(base, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def storage_table(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The [storage] table of a test's configuration, once per backend."""
    if request.param == "postgresql":
        return {"backend": "postgresql", "dsn": request.getfixturevalue("pg_dsn")}
    return {"path": str(tmp_path / "handles.sqlite3")}


@pytest.fixture
def config(tmp_path: Path, storage_table: dict[str, str]) -> Config:
    return make_config(tmp_path, storage=storage_table)


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
