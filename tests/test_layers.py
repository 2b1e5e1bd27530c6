"""One direction of dependency: HTTP layer -> service -> storage interface -> backends."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["storage", "storage.sqlite", "storage.model"])
def test_storage_never_imports_the_http_layer(module):
    loaded = loaded_after(module)
    assert not {m for m in loaded if m.split(".")[0] in {"handle_server", "aiohttp"}}


@pytest.mark.parametrize("module", ["handle_server.app", "handle_server.service"])
def test_the_service_knows_storage_only_through_its_interface(module):
    loaded = loaded_after(module)
    assert "storage" in loaded and "storage.sqlite" not in loaded and "aiosqlite" not in loaded


@pytest.mark.parametrize(
    "module",
    [
        "handle_server.service",
        "handle_server.authenticator",
        "handle_server.authorizer",
        "handle_server.serializers",
    ],
)
def test_the_rules_do_not_depend_on_http(module):
    assert "aiohttp" not in loaded_after(module)
