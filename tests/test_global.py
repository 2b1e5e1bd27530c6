"""Resolving handles homed elsewhere, as the reference's resolver does (``native/client.py``):
the CNRI 7.3 server from ``../shared/cnri`` is the root (it homes ``0.NA/0.NA``) and the site of
prefix ``CNRI``; our own server's native interface is the site of prefix ``TEST``, registered
at that root. The proxy built on this is the global-resolution issue's; these are its parts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from handle_server.app import create_app
from handle_server.config import Config, parse_config
from handle_server.native import codec, signing
from handle_server.native.client import (
    GlobalResolver,
    NativeClient,
    UpstreamError,
    read_root_info,
    server_for,
)
from handle_server.native.remote import root_sites
from handle_server.native.site import TCP, UDP, Interface, Server, SiteInfo
from storage import HandleValue

from .helpers import ADMIN_AUTH, basic, free_port, url_value
from .helpers import Server as HandleServerProcess
from .test_native import CNRI, cnri_admin, require_cnri

# SiteInfo.main of the reference's handle.jar (java net.handle.hdllib.SiteInfo HANDLE...).
REFERENCE_HASHES = {
    (b"CNRI/test-1", 0): 1928050622,  # by prefix
    (b"CNRI/test-1", 1): 2000349005,  # by suffix
    (b"CNRI/test-1", 2): 428955274,  # by the whole handle
    (b"10.1000/182", 0): 2091615925,
    (b"10.1000/182", 1): 121077769,
    (b"10.1000/182", 2): 852241299,
}


def _site(servers: int, hash_option: int, *, primary: bool = True) -> SiteInfo:
    return SiteInfo(
        1,
        tuple(Server(n, f"192.0.2.{n}", b"", ()) for n in range(servers)),
        primary=primary,
        hash_option=hash_option,
    )


@pytest.mark.parametrize(("handle", "option"), list(REFERENCE_HASHES))
def test_a_multi_server_site_spreads_handles_as_the_reference_hashes(handle, option):
    for count in (2, 3, 4):
        chosen = server_for(_site(count, option), handle)
        assert chosen.server_id == REFERENCE_HASHES[handle, option] % count


@pytest.fixture(scope="module")
def cnri_root(tmp_path_factory):
    require_cnri()
    directory = tmp_path_factory.mktemp("cnri") / "svr"
    port, http = free_port(), free_port()
    started = subprocess.run(
        ["bash", str(CNRI / "start_cnri.sh"), str(directory), str(port), str(http)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CNRI_BUILD": "/tmp/cnri-build"},
    )
    assert started.returncode == 0, started.stderr
    yield directory, port
    subprocess.run(["bash", str(CNRI / "stop_cnri.sh"), str(directory)], timeout=60)


def test_root_info_in_each_of_the_references_forms(cnri_root, tmp_path):
    directory, port = cnri_root
    from_root_info = read_root_info((directory / "home" / ".handle" / "root_info").read_bytes())
    from_siteinfo = read_root_info((directory / "siteinfo.bin").read_bytes())
    assert from_root_info == from_siteinfo
    (site,) = from_siteinfo
    assert site.primary and site.servers[0].address == "127.0.0.1"
    assert {(i.protocol, i.port) for i in site.servers[0].interfaces} >= {(TCP, port), (UDP, port)}
    as_json = tmp_path / "site.json"
    as_json.write_text(json.dumps(site.to_json()))
    assert read_root_info(as_json.read_bytes()) == from_siteinfo


async def test_handles_of_the_roots_own_prefix_resolve_through_it(cnri_root):
    directory, _ = cnri_root
    roots = read_root_info((directory / "siteinfo.bin").read_bytes())
    resolver = GlobalResolver(roots, timeout=10)
    answer = await resolver.resolve("CNRI/test-1")
    assert answer.response_code == codec.RC_SUCCESS
    _, values = codec.decode_resolution_body(answer.body)
    assert (1, "URL", b"http://example.org/test-1") in [(v.index, v.type, v.data) for v in values]
    missing = await resolver.resolve("CNRI/no-such-handle")
    assert missing.response_code == codec.RC_HANDLE_NOT_FOUND
    with pytest.raises(LookupError):
        await resolver.resolve("NOPREFIX/x")  # the root knows no 0.NA/NOPREFIX


async def test_a_prefix_registered_at_the_root_resolves_at_our_server(cnri_root, tmp_path):
    """0.NA/TEST at the CNRI root holds our server's HS_SITE (as the prefix registry would put
    it there); a handle of TEST then resolves through the root at our server."""
    directory, cnri_port = cnri_root
    native_port = free_port()
    config = tmp_path / "ours.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "h.sqlite3"}"\n[handle]\nprefixes = ["TEST"]\n'
        '[[admins]]\nid = "300:0.NA/TEST"\nsecret = "admin-secret"\n'
        f'[native]\nenabled = true\nport = {native_port}\nkey_file = "{tmp_path / "n.pem"}"\n'
    )
    ours = HandleServerProcess(["--config", str(config)], tmp_path)
    try:
        await ours.ready()
        async with aiohttp.ClientSession(headers=ADMIN_AUTH) as session:
            async with session.put(
                f"{ours.base}/api/handles/TEST/doc", json=[url_value("https://example.org/doc")]
            ) as resp:
                assert resp.status == 201
            async with session.get(f"{ours.base}/api/handles/0.NA/TEST?type=HS_SITE") as resp:
                site_value = (await resp.json())["values"][0]["data"]["value"]
        site = base64.b64decode(site_value)
        made = cnri_admin(
            "create", cnri_port, "tcp", "0.NA/TEST", "--auth", "300:0.NA/CNRI",
            "--secret", "cnri-secret", "--no-session", "--hexvalue", "1", "HS_SITE", site.hex(),
            "--ttl", "3600",
        )  # fmt: skip
        assert made[0] == "RC 1 SUCCESS", made
        roots = read_root_info((directory / "siteinfo.bin").read_bytes())
        clock = [time.time()]
        resolver = GlobalResolver(roots, timeout=10, clock=lambda: clock[0])
        answer = await resolver.resolve("TEST/doc")
        assert answer.response_code == codec.RC_SUCCESS
        _, values = codec.decode_resolution_body(answer.body)
        assert [(v.index, v.data) for v in values] == [(1, b"https://example.org/doc")]
        # The prefix's sites are kept for their TTL (an hour): the root is not asked again.
        assert b"TEST" in resolver._sites
        resolver.roots = []  # a root that cannot be reached any more
        assert (await resolver.resolve("TEST/doc")).response_code == codec.RC_SUCCESS
        clock[0] += 3601  # past the TTL: the root must be asked again, and cannot be
        with pytest.raises(UpstreamError):
            await resolver.resolve("TEST/doc")
    finally:
        ours.stop()


def _silent_server() -> tuple[Server, socket.socket]:
    """A server whose UDP port swallows requests and whose TCP port refuses connections."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    interfaces = (Interface(UDP, port, 2), Interface(TCP, free_port(), 3))
    return Server(1, "127.0.0.1", b"", interfaces), silent


async def test_a_silent_primary_sends_the_resolver_to_a_mirror_then_gives_up_in_time(cnri_root):
    directory, _ = cnri_root
    (root,) = read_root_info((directory / "siteinfo.bin").read_bytes())
    dead, silent = _silent_server()
    try:
        primary = SiteInfo(1, (dead,), primary=True)
        mirror = replace(root, primary=False)
        client = NativeClient(udp_wait=0.3, udp_tries=2)
        resolver = GlobalResolver([primary, mirror], client, timeout=5)
        started = time.monotonic()
        answer = await resolver.resolve("0.NA/CNRI", types=["HS_SITE"])
        assert answer.response_code == codec.RC_SUCCESS  # from the mirror
        assert time.monotonic() - started < 3
        alone = GlobalResolver([primary], client, timeout=1.5)
        started = time.monotonic()
        with pytest.raises(UpstreamError):
            await alone.resolve("0.NA/CNRI")
        assert time.monotonic() - started < 2.5  # within the configured timeout
    finally:
        silent.close()


async def test_our_server_in_global_mode_resolves_other_sites_handles(cnri_root, tmp_path):
    """``[resolver] mode = "global"``: handles of prefixes homed elsewhere resolve through the
    root (here the CNRI server), with everything the resolver does for local ones; local
    handles still come from the store; an unknown prefix is 404; a root that does not answer
    is 504 within the timeout."""
    directory, _ = cnri_root
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    dead_site = SiteInfo(
        1,
        (Server(1, "127.0.0.1", b"", (Interface(UDP, silent.getsockname()[1], 2),)),),
    )
    (tmp_path / "dead.bin").write_bytes(dead_site.encode())
    servers = []
    try:
        for name, root, timeout, limits in (
            ("global", directory / "siteinfo.bin", 20, 'deny_prefixes = ["DENIED"]'),
            ("dead", tmp_path / "dead.bin", 2, 'allow_prefixes = ["CNRI"]'),
        ):
            config = tmp_path / f"{name}.toml"
            config.write_text(
                f'[storage]\npath = "{tmp_path / name}.sqlite3"\n[handle]\nprefixes = ["TEST"]\n'
                '[[admins]]\nid = "300:0.NA/TEST"\nsecret = "admin-secret"\n'
                f'[resolver]\nmode = "global"\nroot_info = "{root}"\ntimeout = {timeout}\n'
                f"{limits}\n"
            )
            server = HandleServerProcess(["--config", str(config)], tmp_path)
            servers.append(server)
            await server.ready()
        proxy, dead = servers
        async with aiohttp.ClientSession() as session:
            get = session.get
            async with get(f"{proxy.base}/CNRI/test-1", allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "http://example.org/test-1"
                assert "max-age" in resp.headers["Cache-Control"]
            async with get(f"{proxy.base}/api/handles/CNRI/test-1?type=EMAIL") as resp:
                body = await resp.json()
                assert resp.status == 200, body
                assert [v["data"]["value"] for v in body["values"]] == ["test-1@example.org"]
            async with get(
                f"{proxy.base}/CNRI/test-1", headers={"Accept": "application/json"}
            ) as r:
                assert r.status == 200 and len((await r.json())["values"]) == 3
            async with get(f"{proxy.base}/api/handles/NOPREFIX/x") as resp:
                assert resp.status == 404 and (await resp.json())["responseCode"] == 100
            async with get(f"{proxy.base}/api/handles/CNRI/no-such-handle") as resp:
                assert resp.status == 404
            async with session.put(
                f"{proxy.base}/api/handles/TEST/local",
                json=[url_value("https://example.org/local")],
                headers=ADMIN_AUTH,
            ) as resp:
                assert resp.status == 201
            async with get(f"{proxy.base}/TEST/local", allow_redirects=False) as resp:
                assert resp.headers["Location"] == "https://example.org/local"
            started = time.monotonic()
            async with get(f"{dead.base}/api/handles/CNRI/test-1") as resp:
                assert resp.status == 504, await resp.text()
                assert (await resp.json())["responseCode"] == 2
            assert time.monotonic() - started < 4  # within [resolver] timeout (2 s)
            async with get(f"{dead.base}/CNRI/test-1") as resp:
                assert resp.status == 504 and "text/html" in resp.headers["Content-Type"]
            # Prefixes the proxy does not resolve: refused at once, no site asked.
            for base, handle in (
                (proxy.base, "DENIED/x"),
                (proxy.base, "DENIED.SUB/x"),  # derived from a denied prefix
                (dead.base, "OTHER/x"),  # not among allow_prefixes
            ):
                async with get(f"{base}/api/handles/{handle}") as resp:
                    assert (await resp.json())["responseCode"] == 301, handle
            # What the proxy did, on /metrics.
            async with get(f"{proxy.base}/metrics") as resp:
                shown = await resp.text()
            assert 'handle_server_remote_cache_lookups_total{result="load"}' in shown
            assert 'handle_server_remote_cache_lookups_total{result="hit"} ' in shown
            assert (
                'handle_server_upstream_duration_seconds_count{outcome="answered",'
                'server="127.0.0.1"}' in shown
            )
            async with get(f"{dead.base}/metrics") as resp:
                shown = await resp.text()
            assert 'outcome="failed",server="127.0.0.1"}' in shown
        for server in servers:
            assert "Traceback" not in server.log.read_text()
    finally:
        for server in servers:
            server.stop()
        silent.close()


def test_the_global_registrys_root_ships_with_the_package():
    """Without [resolver] root_info, the GHR's root sites as the reference ships them
    (``net/handle/etc/root_info`` of its handle.jar): one primary and its mirrors."""
    sites = root_sites(Config())
    assert len(sites) >= 2 and sum(s.primary for s in sites) == 1
    assert all(i.port == 2641 for s in sites for i in s.servers[0].interfaces if i.protocol == UDP)


def _site_lines(log: Path, handle: str) -> int:
    """Resolutions of ``handle`` in one of our servers' access logs (UDP or TCP)."""
    return len(re.findall(rf'"HDL-(?:UDP|TCP) resolution {re.escape(handle)}" 1 ', log.read_text()))


async def _settled(count: Callable[[], int], expected: int) -> int:
    """``count()`` once it is ``expected`` (access-log lines are written within 10 ms), or
    what it is after two seconds."""
    for _ in range(40):
        if count() == expected:
            break
        await asyncio.sleep(0.05)
    return count()


async def test_a_proxy_caches_for_the_ttl_reaches_the_site_on_auth_and_spreads_by_hash(
    cnri_root, tmp_path, aiohttp_client
):
    """The done-when of the global-resolution issue, end to end: prefix MULTI is homed at a
    two-server site (two of our server processes on one store), registered at the CNRI root.
    A proxy in global mode (in this process, on a fake clock) resolves its handles; each
    handle reaches the server the reference's hash names, and only it; a record is asked of
    the site once within its values' TTL and again after; ``auth=true`` reaches the site
    every time."""
    directory, cnri_port = cnri_root
    sites = []
    native_ports = [free_port(), free_port()]
    try:
        for port in native_ports:
            config = tmp_path / f"site-{port}.toml"
            config.write_text(
                f'[storage]\npath = "{tmp_path / "multi.sqlite3"}"\n[handle]\n'
                'prefixes = ["MULTI"]\n[[admins]]\nid = "300:0.NA/MULTI"\nsecret = "s"\n'
                f'[auth]\nkey_file = "{tmp_path / "secret.key"}"\n'
                f'[native]\nenabled = true\nport = {port}\nkey_file = "{tmp_path / "n.pem"}"\n'
            )
            site_server = HandleServerProcess(["--config", str(config)], tmp_path)
            sites.append(site_server)
            await site_server.ready()
        handles = [f"MULTI/h{n}" for n in range(12)]
        auth = basic("300:0.NA/MULTI", "s")
        located = {
            "index": 2,
            "type": "10320/loc",
            "data": '<locations><location href_template="https://r.org/?id={hdl}"/></locations>',
        }
        async with aiohttp.ClientSession(headers=auth) as session:
            for n, handle in enumerate(handles):
                value = url_value(f"https://example.org/{n}", ttl=120)
                async with session.put(f"{sites[0].base}/api/handles/{handle}", json=[value]) as r:
                    assert r.status == 201, await r.text()
            url = f"{sites[1].base}/api/handles/MULTI/loc"
            async with session.put(url, json=[located]) as r:
                assert r.status == 201, await r.text()
        site = SiteInfo(
            1,
            tuple(
                Server(n, "127.0.0.1", b"", (Interface(UDP, port, 2), Interface(TCP, port, 2)))
                for n, port in enumerate(native_ports)
            ),
        )
        made = cnri_admin(
            "create", cnri_port, "tcp", "0.NA/MULTI", "--auth", "300:0.NA/CNRI",
            "--secret", "cnri-secret", "--no-session", "--hexvalue", "1", "HS_SITE",
            site.encode().hex(), "--ttl", "86400",
        )  # fmt: skip
        assert made[0] == "RC 1 SUCCESS", made

        clock = [time.time()]
        config = parse_config(
            {
                "storage": {"path": str(tmp_path / "proxy.sqlite3")},
                "handle": {"prefixes": ["LOCAL"]},
                "admins": [{"id": "300:0.NA/LOCAL", "secret": "operator"}],
                "auth": {"key_file": str(tmp_path / "proxy.key")},
                "resolver": {"mode": "global", "root_info": str(directory / "siteinfo.bin")},
            }
        )
        proxy = await aiohttp_client(create_app(config, clock=lambda: clock[0]))
        # A second process of the proxy, on the same store (as --workers runs them).
        other = await aiohttp_client(create_app(config, clock=lambda: clock[0]))
        for n, handle in enumerate(handles):
            resp = await proxy.get(f"/{handle}", allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"] == f"https://example.org/{n}"
        # Each handle went to the server the hash names, and only there.
        for handle in handles:
            chosen = server_for(site, handle.encode()).server_id
            for n, site_server in enumerate(sites):
                seen = await _settled(
                    lambda s=site_server, h=handle: _site_lines(s.log, h), int(n == chosen)
                )
                assert seen == int(n == chosen), (handle, n, chosen)
        assert {server_for(site, h.encode()).server_id for h in handles} == {0, 1}
        # A remote 10320/loc: the proxy picks its location as it does for a local one.
        resp = await proxy.get("/MULTI/loc", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "https://r.org/?id=MULTI%2Floc"

        handle = handles[0]
        home = sites[server_for(site, handle.encode()).server_id]
        asked = lambda: _site_lines(home.log, handle)  # noqa: E731
        for _ in range(3):  # within the TTL: from the proxy's cache
            resp = await proxy.get(f"/api/handles/{handle}")
            assert resp.status == 200
            assert resp.headers["Cache-Control"].startswith("public, max-age=")
        etag = resp.headers["ETag"]
        resp = await proxy.get(f"/api/handles/{handle}", headers={"If-None-Match": etag})
        assert resp.status == 304
        resp = await proxy.get(f"/{handle}?noredirect", headers={"Accept": "text/html"})
        assert resp.status == 200 and "https://example.org/0" in await resp.text()
        resp = await proxy.get(f"/{handle}?urlappend=%2Fmore", allow_redirects=False)
        assert resp.headers["Location"] == "https://example.org/0/more"
        assert await _settled(asked, 1) == 1
        clock[0] += 121  # past the values' TTL (120 s)
        resp = await proxy.get(f"/api/handles/{handle}")
        assert resp.status == 200 and await _settled(asked, 2) == 2
        for expected in (3, 4, 5):  # auth=true: to the site every time
            resp = await proxy.get(f"/api/handles/{handle}?auth=true")
            assert resp.status == 200 and await _settled(asked, expected) == expected
        resp = await proxy.get(f"/api/handles/{handle}")  # auth=true refreshed the cache
        assert resp.status == 200 and await _settled(asked, 5) == 5

        # Purges, by the proxy's operators, reach every process on its store.
        assert (await other.get(f"/api/handles/{handle}")).status == 200
        assert (await other.get(f"/api/handles/{handle}")).status == 200
        assert await _settled(asked, 6) == 6  # the other process asked once, then kept it
        resp = await proxy.delete(f"/api/cache/{handle}")
        assert resp.status == 401 and (await resp.json())["responseCode"] == 402
        operator = basic("300:0.NA/LOCAL", "operator")
        outsider = basic("300:0.NA/MULTI", "s")
        resp = await proxy.delete(f"/api/cache/{handle}", headers=outsider)
        assert resp.status in (401, 403)  # not an identity of this server: no purge
        assert await _settled(asked, 6) == 6
        resp = await proxy.delete(f"/api/cache/{handle}", headers=operator)
        assert resp.status == 200
        assert await resp.json() == {"responseCode": 1, "handle": handle}
        for client, expected in ((proxy, 7), (other, 8)):
            assert (await client.get(f"/api/handles/{handle}")).status == 200
            assert await _settled(asked, expected) == expected
        resp = await other.delete("/api/cache", headers=operator)  # everything
        assert resp.status == 200 and await resp.json() == {"responseCode": 1}
        for client, expected in ((proxy, 9), (other, 10)):
            assert (await client.get(f"/{handle}", allow_redirects=False)).status == 302
            assert await _settled(asked, expected) == expected
    finally:
        for site_server in sites:
            site_server.stop()
    for site_server in sites:
        assert "Traceback" not in site_server.log.read_text()


class ScriptedSite(asyncio.DatagramProtocol):
    """A site that answers resolutions from a table, over UDP: it stands in for the parts of
    the Handle System the CNRI 7.3 server does not play (it never answers RC 302 or 303, and
    holds no slashless prefix handles of a delegated namespace). Records what it is asked."""

    def __init__(self) -> None:
        self.answers: dict[bytes, tuple[int, bytes]] = {}
        self.asked: list[bytes] = []
        self.delay = 0.0  # seconds before each answer
        self.working = self.most_working = 0  # requests not yet answered: now, at most

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        envelope = codec.decode_envelope(data)
        request = codec.decode_message(data[codec.ENVELOPE.size :])
        handle = codec.Reader(request.body).string()
        self.asked.append(handle)
        rc, body = self.answers.get(
            handle.upper(), (codec.RC_HANDLE_NOT_FOUND, codec.error_body("not here"))
        )
        reply = codec.encode_message(codec.Message(request.op_code, rc, 0, 0, 0, 0, body))
        out = codec.Envelope(envelope.major, envelope.minor, request_id=envelope.request_id)
        self.working += 1
        self.most_working = max(self.most_working, self.working)
        data = out._replace(length=len(reply)).encode() + reply
        asyncio.get_running_loop().call_later(self.delay, self._send, data, addr)

    def _send(self, data: bytes, addr: tuple) -> None:
        self.working -= 1
        self.transport.sendto(data, addr)

    def answer(self, handle: bytes, rc: int, values: list[HandleValue]) -> None:
        self.answers[handle.upper()] = (rc, codec.encode_resolution_body(handle, values))

    @property
    def site(self) -> SiteInfo:
        port = self.transport.get_extra_info("sockname")[1]
        return SiteInfo(1, (Server(0, "127.0.0.1", b"", (Interface(UDP, port, 2),)),))


async def _scripted() -> ScriptedSite:
    loop = asyncio.get_running_loop()
    _, site = await loop.create_datagram_endpoint(ScriptedSite, local_addr=("127.0.0.1", 0))
    return site


def _site_value(kind: str, site: SiteInfo, index: int = 1) -> HandleValue:
    return HandleValue(index, kind, site.encode(), ttl=3600)


async def test_delegated_prefixes_and_referrals_are_followed_as_the_reference_does(
    cnri_root, tmp_path, aiohttp_client
):
    """Derived prefixes the root does not hold (``0.NA/DLG`` at the CNRI root names an
    HS_NA_DELEGATE site, which holds ``DLG.SUB`` and delegates again to ``DLG.SUB.DEEP``); an
    RC 303 (NA delegate) answer from a root; an RC 302 (service referral) answer from a site;
    and referrals in a circle, which end with an error instead of running to the deadline.
    The handles themselves live at our server (another process)."""
    directory, cnri_port = cnri_root
    prefixes = ["DLG.SUB", "DLG.SUB.DEEP", "REF.X", "SRV"]
    config = tmp_path / "ours.toml"
    native_port = free_port()
    admins = "".join(f'[[admins]]\nid = "300:0.NA/{p}"\nsecret = "s"\n' for p in prefixes)
    config.write_text(
        f'[storage]\npath = "{tmp_path / "h.sqlite3"}"\n'
        f"[handle]\nprefixes = {json.dumps(prefixes)}\n{admins}"
        f'[native]\nenabled = true\nport = {native_port}\nkey_file = "{tmp_path / "n.pem"}"\n'
    )
    ours = HandleServerProcess(["--config", str(config)], tmp_path)
    scripted = await _scripted()
    try:
        await ours.ready()
        async with aiohttp.ClientSession() as session:
            for prefix in prefixes:
                value = url_value(f"https://example.org/{prefix}")
                auth = basic(f"300:0.NA/{prefix}", "s")
                url = f"{ours.base}/api/handles/{prefix}/x"
                async with session.put(url, json=[value], headers=auth) as r:
                    assert r.status == 201, await r.text()
            async with session.get(f"{ours.base}/api/handles/0.NA/SRV?type=HS_SITE") as resp:
                ours_site = SiteInfo.decode(
                    base64.b64decode((await resp.json())["values"][0]["data"]["value"])
                )
        here = scripted.site
        # 0.NA/DLG at the (real) root delegates derived prefixes to the scripted site.
        made = cnri_admin(
            "create", cnri_port, "tcp", "0.NA/DLG", "--auth", "300:0.NA/CNRI",
            "--secret", "cnri-secret", "--no-session", "--hexvalue", "1", "HS_NA_DELEGATE",
            here.encode().hex(), "--ttl", "3600",
        )  # fmt: skip
        assert made[0] == "RC 1 SUCCESS", made
        success = codec.RC_SUCCESS
        scripted.answer(
            b"DLG.SUB",
            success,
            [_site_value("HS_SITE", ours_site), _site_value("HS_NA_DELEGATE", here, 2)],
        )
        scripted.answer(b"DLG.SUB.DEEP", success, [_site_value("HS_SITE", ours_site)])
        roots = read_root_info((directory / "siteinfo.bin").read_bytes())
        resolver = GlobalResolver(roots, timeout=10)
        for prefix in ("DLG.SUB", "DLG.SUB.DEEP"):
            scripted.asked.clear()
            answer = await resolver.resolve(f"{prefix}/x")
            assert answer.response_code == success, prefix
            _, values = codec.decode_resolution_body(answer.body)
            assert values[0].data == f"https://example.org/{prefix}".encode()
            # Each level below the root's 0.NA/DLG, slashless, of the delegate.
            assert scripted.asked == [b"DLG.SUB", b"DLG.SUB.DEEP"][: prefix.count(".")]
        with pytest.raises(LookupError):  # the delegate knows no DLG.NONE
            await resolver.resolve("DLG.NONE/x")

        # A scripted root: an RC 303 for 0.NA/REF.X, a service referral for SRV/x.
        referral = codec.encode_resolution_body(b"0.NA/REF", [_site_value("HS_NA_DELEGATE", here)])
        scripted.answers[b"0.NA/REF.X"] = (codec.RC_NA_DELEGATE, referral)
        scripted.answer(b"REF.X", success, [_site_value("HS_SITE", ours_site)])
        scripted.answer(b"0.NA/SRV", success, [_site_value("HS_SITE", here)])
        scripted.answers[b"SRV/X"] = (
            codec.RC_SERVICE_REFERRAL,
            codec.encode_resolution_body(b"0.NA/SRV.OTHER", [_site_value("HS_SITE", ours_site)]),
        )
        scripted.answer(b"0.NA/LOOP", success, [_site_value("HS_SITE", here)])
        scripted.answers[b"LOOP/X"] = (
            codec.RC_SERVICE_REFERRAL,
            codec.encode_resolution_body(b"0.NA/LOOP", [_site_value("HS_SITE", here)]),
        )
        resolver = GlobalResolver([here], timeout=10)
        for handle in ("REF.X/x", "SRV/x"):
            scripted.asked.clear()
            answer = await resolver.resolve(handle)
            assert answer.response_code == success, handle
            _, values = codec.decode_resolution_body(answer.body)
            assert values[0].data == f"https://example.org/{handle[:-2]}".encode()
        assert scripted.asked == [b"0.NA/SRV", b"SRV/x"]  # then our server answered
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="too many referrals"):
            await resolver.resolve("LOOP/x")
        assert time.monotonic() - started < 5

        # The proxy (global mode, this process) follows the same path for a browser.
        proxy_config = parse_config(
            {
                "storage": {"path": str(tmp_path / "proxy.sqlite3")},
                "handle": {"prefixes": ["LOCAL"]},
                "auth": {"key_file": str(tmp_path / "proxy.key")},
                "resolver": {"mode": "global", "root_info": str(directory / "siteinfo.bin")},
            }
        )
        proxy = await aiohttp_client(create_app(proxy_config))
        resp = await proxy.get("/DLG.SUB.DEEP/x", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "https://example.org/DLG.SUB.DEEP"
    finally:
        scripted.transport.close()
        ours.stop()
    assert "Traceback" not in ours.log.read_text()


async def test_an_upstream_server_gets_at_most_the_configured_requests_at_once():
    """``[resolver] upstream_concurrency``: a burst of distinct handles of one slow site
    reaches it a few at a time; the rest wait their turn, within the deadline."""
    slow = await _scripted()
    try:
        slow.answer(b"0.NA/SLOW", codec.RC_SUCCESS, [_site_value("HS_SITE", slow.site)])
        for n in range(12):
            slow.answer(f"SLOW/{n}".encode(), codec.RC_SUCCESS, [url_value_raw(n)])
        slow.delay = 0.2
        resolver = GlobalResolver([slow.site], timeout=10, concurrency=3)
        started = time.monotonic()
        answers = await asyncio.gather(*(resolver.resolve(f"SLOW/{n}") for n in range(12)))
        assert [a.response_code for a in answers] == [codec.RC_SUCCESS] * 12
        assert slow.most_working == 3
        assert slow.asked.count(b"0.NA/SLOW") == 1  # the prefix looked up once for all 12
        assert time.monotonic() - started >= 4 * 0.2  # 0.NA/SLOW, then 12 three at a time
        assert resolver._slots == {}  # nothing kept for servers not in use
        # Waiting for a turn counts against the deadline: 504, not a queue without end.
        slow.delay = 1.5
        hurried = GlobalResolver([slow.site], timeout=2, concurrency=1)
        started = time.monotonic()
        results = await asyncio.gather(
            *(hurried.resolve(f"SLOW/{n}") for n in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, UpstreamError) for r in results)  # 3 x 1.5 s do not fit in 2
        assert time.monotonic() - started < 3
    finally:
        slow.transport.close()


def url_value_raw(n: int) -> HandleValue:
    return HandleValue(1, "URL", f"https://example.org/{n}".encode(), ttl=60)


async def test_certified_answers_are_checked_with_the_key_in_the_site_info(cnri_root):
    """``certify``: the CNRI root signs its answers with the key its siteinfo.bin holds, and
    they verify; the same server described with another key is not believed (its answers
    count as none: no site answered)."""
    directory, _ = cnri_root
    (root,) = read_root_info((directory / "siteinfo.bin").read_bytes())
    resolver = GlobalResolver([root], timeout=10, certify=True)
    answer = await resolver.resolve("CNRI/test-1")
    assert answer.response_code == codec.RC_SUCCESS and answer.flag(codec.FLAG_CERTIFY)
    assert signing.signed_by(answer, root.servers[0].public_key)
    other_key = signing.encode_public_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    )
    forged = replace(root, servers=(replace(root.servers[0], public_key=other_key),))
    with pytest.raises(UpstreamError, match="not signed with its key"):
        await GlobalResolver([forged], timeout=5, certify=True).resolve("CNRI/test-1")
    # Without certify the same (wrongly described) server is believed: nothing is checked.
    plain = await GlobalResolver([forged], timeout=5).resolve("CNRI/test-1")
    assert plain.response_code == codec.RC_SUCCESS and not plain.credential
