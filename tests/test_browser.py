"""The resolver's pages in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .helpers import url_value

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("chromium is not installed (.ci/run installs it)", allow_module_level=True)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1100,700",
]


async def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None, "chromium is missing: .ci/run must install it"
    profile = tempfile.mkdtemp(prefix="profile-", dir=tmp_path)
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def test_record_page_renders_with_values_as_text(api, client, tmp_path):
    await api.put(
        "TEST/shown",
        [
            url_value("https://example.org/article/42"),
            {"index": 2, "type": "EMAIL", "data": "editor@example.org"},
            {"index": 3, "type": "DESC", "data": '<img src=x id="injected" onerror="alert(1)">'},
            {"index": 4, "type": "SECRET", "data": "not-for-browsers", "permissions": "1100"},
        ],
    )
    url = str(client.make_url("/TEST/shown?noredirect"))
    dom = await chromium(tmp_path, "--dump-dom", url)
    assert "<title>Handle TEST/shown</title>" in dom
    assert "editor@example.org" in dom and "https://example.org/article/42" in dom
    # The value is a text node (serialised with &lt;), no element was made from it.
    assert "<img" not in dom and '&lt;img src=x id="injected"' in dom
    assert "not-for-browsers" not in dom
    shot = tmp_path / "record.png"
    await chromium(tmp_path, f"--screenshot={shot}", url)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    keep = os.environ.get("HANDLE_SERVER_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / "record.png")


async def test_not_found_page_renders(client, tmp_path):
    url = str(client.make_url("/TEST/missing"))
    dom = await chromium(tmp_path, "--dump-dom", url)
    assert "Handle not found" in dom and "TEST/missing" in dom and 'name="hdl"' in dom
    shot = tmp_path / "missing.png"
    await chromium(tmp_path, f"--screenshot={shot}", url)
    assert shot.stat().st_size > 5_000
    keep = os.environ.get("HANDLE_SERVER_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / "missing.png")


async def test_a_deleted_handle_has_a_page_that_says_so(api, client, tmp_path):
    """410 Gone with when, to a browser; the REST API and the resolver's JSON still say 404,
    as the reference does; a handle that never existed stays 404."""
    await api.put("TEST/gone", [url_value("https://gone.example.org")])
    await api.delete("TEST/gone")
    url = str(client.make_url("/TEST/gone"))
    dom = await chromium(tmp_path, "--dump-dom", url)
    assert "Handle deleted" in dom and "TEST/gone" in dom and "existed and was deleted" in dom
    assert "gone.example.org" not in dom
    async with client.get("/TEST/gone") as resp:
        assert resp.status == 410 and resp.content_type == "text/html"
    async with client.get("/TEST/gone", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 404 and (await resp.json())["responseCode"] == 100
    assert (await api.get("TEST/gone"))[0] == 404
    async with client.get("/TEST/never") as resp:
        assert resp.status == 404
    # Made again, it resolves again.
    await api.put("TEST/gone", [url_value("https://back.example.org")])
    async with client.get("/TEST/gone", allow_redirects=False) as resp:
        assert resp.status == 302


async def test_a_browser_follows_the_redirect_to_the_url(api, client, tmp_path):
    target = str(client.make_url("/TEST/landing?noredirect"))
    await api.put("TEST/landing", [{"index": 1, "type": "DESC", "data": "landing page"}])
    await api.put("TEST/go", [url_value(target)])
    dom = await chromium(tmp_path, "--dump-dom", str(client.make_url("/TEST/go")))
    assert "Handle TEST/landing" in dom and "landing page" in dom
