"""One direction of dependency: HTTP layer -> service -> storage interface -> backends.

Every module of both packages is imported alone, in a fresh interpreter, and what it loaded
is checked against the layer it belongs to."""

from __future__ import annotations

import concurrent.futures
import pkgutil
import subprocess
import sys

import pytest

import handle_server
import storage

#: Where aiohttp may be: the application, the handlers and what they share, the operators'
#: side (metrics, serving, workers) and the command line. Everything else is the rules.
HTTP_LAYER = (
    "handle_server.app",
    "handle_server.routes",
    "handle_server.middlewares",
    "handle_server.params",
    "handle_server.responses",
    "handle_server.keys",
    "handle_server.api.",
    "handle_server.resolver.views",
    "handle_server.onezone.views",
    "handle_server.native.views",
    "handle_server.ops.",
    "handle_server.cli.",
)


def _modules(package) -> list[str]:
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith(".__main__"):  # runs the command when imported
            names.append(info.name)
    return sorted(names)


ALL = _modules(handle_server) + _modules(storage)


def _loaded(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"{module} does not import alone:\n{out.stderr}"
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(zip(ALL, pool.map(_loaded, ALL), strict=True))


def _http(module: str) -> bool:
    return module == "handle_server" or any(
        module in (layer, layer.rstrip(".")) or (layer.endswith(".") and module.startswith(layer))
        for layer in HTTP_LAYER
    )


def test_every_module_is_checked(loaded):
    assert len(loaded) > 40 and "handle_server.auth.authenticator" in loaded


def test_storage_never_imports_the_http_layer(loaded):
    for module in (m for m in ALL if m.startswith("storage")):
        bad = {m for m in loaded[module] if m.split(".")[0] in {"handle_server", "aiohttp"}}
        assert not bad, (module, bad)


def test_the_rules_do_not_depend_on_http(loaded):
    for module in (m for m in ALL if m.startswith("handle_server.") and not _http(m)):
        assert "aiohttp" not in loaded[module], module


def test_the_server_knows_storage_only_through_its_interface(loaded):
    for module in (m for m in ALL if m.startswith("handle_server")):
        backends = {"storage.sqlite", "storage.postgres", "aiosqlite", "asyncpg"}
        assert not backends & loaded[module], (module, backends & loaded[module])
