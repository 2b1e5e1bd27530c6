"""The native Handle protocol: the codec against bytes of real CNRI exchanges
(``../shared/cnri/NOTES.md``), and CNRI's own client resolving through our server over TCP and
HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handle_server.app import create_app
from handle_server.native import codec, signing
from handle_server.native.tcp import NativeTcp
from handle_server.native.udp import MAX_DATAGRAM
from handle_server.native.views import NATIVE
from storage import HandleValue

from .helpers import ADMIN_AUTH, Api, Server, free_port, make_config, url_value

CNRI = Path(__file__).resolve().parent.parent.parent / "shared" / "cnri"

# CNRI's client resolving CNRI/test-1 over TCP (NOTES.md, "Wire facts observed").
REQUEST = bytes.fromhex(
    "02030000" "00000000" "5c1fc500" "00000000" "00000033"
    "00000001" "00000000" "19000000" "ffff" "00" "00" "6b0f51f6" "00000017"
    "0000000b" "434e52492f746573742d31" "00000000" "00000000"
    "00000000"
)  # fmt: skip
# The first value of the reference's answer.
URL_VALUE = bytes.fromhex(
    "00000001" "6b0ea90f" "00" "00015180" "0e" "00000003" "55524c"
    "00000019" + b"http://example.org/test-1".hex() + "00000000"
)  # fmt: skip


def test_a_real_request_decodes_and_encodes_back_to_its_bytes():
    envelope = codec.decode_envelope(REQUEST)
    assert (envelope.major, envelope.minor, envelope.request_id, envelope.length) == (
        2,
        3,
        0x5C1FC500,
        51,
    )
    message = codec.decode_message(REQUEST[20:])
    assert (message.op_code, message.response_code, message.site_serial) == (1, 0, 0xFFFF)
    assert message.flag(codec.FLAG_RECURSIVE) and message.flag(codec.FLAG_PUBLIC_ONLY)
    assert not message.flag(codec.FLAG_AUTHORITATIVE)
    asked = codec.ResolutionRequest.decode(message.body)
    assert (asked.handle, asked.indexes, asked.types) == (b"CNRI/test-1", [], [])
    assert envelope.encode() + codec.encode_message(message) == REQUEST


def test_a_value_encodes_as_the_reference_encodes_it():
    value = HandleValue(1, "URL", b"http://example.org/test-1", ttl=86400, timestamp=0x6B0EA90F)
    assert codec.encode_value(value) == URL_VALUE


@pytest.mark.parametrize(
    "broken",
    [
        REQUEST[20:30],  # a header cut short
        REQUEST[20:44] + b"\x00\x00",  # a body shorter than its length
        REQUEST[20:44] + bytes.fromhex("ffffffff") + REQUEST[48:],  # a handle length that lies
    ],
)
def test_broken_messages_are_refused_not_read_past(broken):
    with pytest.raises(codec.MessageError):
        message = codec.decode_message(broken)
        codec.ResolutionRequest.decode(message.body)


# -- CNRI's client against our server ------------------------------------------------------------


def require_cnri() -> None:
    """Skip the test when the CNRI reference or Java is missing here; in CI, fail it."""
    reason = None
    if not (CNRI / "resolve.sh").is_file():
        reason = f"{CNRI} is not here"
    elif not shutil.which("java") or not shutil.which("javac"):
        reason = "Java 17 (openjdk-17-jdk-headless) is not installed"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test against the CNRI reference: {reason}")
        pytest.skip(reason)


@pytest.fixture
def native_server(tmp_path):
    require_cnri()
    native_port = free_port()
    config = tmp_path / "native.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "h.sqlite3"}"\n[handle]\nprefixes = ["TEST"]\n'
        '[[admins]]\nid = "300:0.NA/TEST"\nsecret = "admin-secret"\n'
        f"[native]\nenabled = true\nport = {native_port}\nudp_rate = 100\n"
        f'key_file = "{tmp_path / "native.pem"}"\n'
    )
    server = Server(["--config", str(config)], tmp_path)
    server.native_port = native_port
    yield server
    server.stop()


def cnri_resolve(port: int, handle: str, proto: str, *options: str) -> tuple[str, list[str]]:
    out = subprocess.run(
        ["bash", str(CNRI / "resolve.sh"), "127.0.0.1", str(port), handle, proto, *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CNRI_BUILD": "/tmp/cnri-build"},
    )
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    return lines[0], lines[1:]


@pytest.mark.slow
async def test_the_cnri_client_resolves_through_our_server(native_server):
    await native_server.ready()
    values = [
        url_value("https://example.org/doc"),
        {"index": 2, "type": "EMAIL", "data": "pid@example.org"},
        {"index": 3, "type": "SECRET_NOTE", "data": "only-for-admins", "permissions": "1100"},
    ]
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{native_server.base}/api/handles/TEST/doc", json=values, headers=ADMIN_AUTH
        ) as resp:
            assert resp.status == 201
    for proto, port in (
        ("tcp", native_server.native_port),
        ("udp", native_server.native_port),
        ("http", native_server.port),
    ):
        rc, lines = cnri_resolve(port, "TEST/doc", proto)
        assert rc == "RC 1 SUCCESS" or rc.startswith("RC 1 "), (proto, rc, lines)
        shown = "\n".join(lines)
        assert "https://example.org/doc" in shown and "pid@example.org" in shown, proto
        assert "only-for-admins" not in shown, proto  # never a private value, anonymously
        rc, lines = cnri_resolve(port, "TEST/doc", proto, "--type", "EMAIL")
        assert rc.startswith("RC 1 ") and "pid@example.org" in "\n".join(lines)
        assert "https://example.org/doc" not in "\n".join(lines)
        rc, _ = cnri_resolve(port, "TEST/none", proto)
        assert rc.startswith("RC 100"), (proto, rc)
        rc, _ = cnri_resolve(port, "OTHER/x", proto)
        assert rc.startswith("RC 301"), (proto, rc)
    log = native_server.log.read_text()
    assert "Traceback" not in log
    # The access log has a line for each, as for HTTP requests.
    for proto in ("TCP", "UDP", "HTTP"):
        assert f'"HDL-{proto} resolution TEST/doc" 1 ' in log, proto
        assert f'"HDL-{proto} resolution TEST/none" 100 ' in log, proto


def cnri_admin(command: str, port: int, proto: str, *arguments: str) -> list[str]:
    out = subprocess.run(
        ["bash", str(CNRI / "hdltool.sh"), command, "127.0.0.1", str(port), proto, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CNRI_BUILD": "/tmp/cnri-build"},
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert lines, out.stderr
    return lines


def handle_server_command(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "handle_server", *arguments], check=True, timeout=60)


NO_SESSION = ("--auth", "300:0.NA/TEST", "--secret", "admin-secret", "--no-session")


@pytest.mark.slow
async def test_the_cnri_client_administers_handles_with_a_secret_key(native_server, tmp_path):
    """Create, add, modify, remove and delete through CNRI's client over TCP and HTTP, with
    the reference's challenge-response; then what REST shows agrees."""
    await native_server.ready()
    for proto, port in (("tcp", native_server.native_port), ("http", native_server.port)):
        name = f"TEST/cnri-{proto}"
        made = cnri_admin(
            "create", port, proto, name, *NO_SESSION,
            "--value", "1", "URL", "https://example.org/a",
            "--pvalue", "2", "NOTE", "private-note",
        )  # fmt: skip
        assert made[0] == "RC 1 SUCCESS", made
        again = cnri_admin("create", port, proto, name, *NO_SESSION, "--value", "1", "URL", "x")
        assert again[0].startswith("RC 101"), again
        steps = [
            ("add", "--value", "3", "EMAIL", "pid@example.org"),
            ("modify", "--value", "1", "URL", "https://example.org/b"),
            ("remove", "--index", "3"),
        ]
        for command, *values in steps:
            done = cnri_admin(command, port, proto, name, *NO_SESSION, *values)
            assert done[0] == "RC 1 SUCCESS", (command, done)
        missing = cnri_admin("modify", port, proto, name, *NO_SESSION, "--value", "7", "URL", "x")
        assert missing[0].startswith("RC 200"), missing
        wrong = cnri_admin(
            "add", port, proto, name, "--auth", "300:0.NA/TEST", "--secret", "not-it",
            "--no-session", "--value", "5", "URL", "https://example.org/evil",
        )  # fmt: skip
        assert wrong[0].startswith("RC 403"), wrong
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{native_server.base}/api/handles/{name}?publicOnly=false", headers=ADMIN_AUTH
            ) as resp:
                record = await resp.json()
        shown = {v["index"]: (v["type"], v["data"]["value"]) for v in record["values"]}
        assert shown[1] == ("URL", "https://example.org/b")
        assert shown[2] == ("NOTE", "private-note") and 3 not in shown and 5 not in shown
        assert shown[100][0] == "HS_ADMIN"
        gone = cnri_admin("delete", port, proto, name, *NO_SESSION)
        assert gone[0] == "RC 1 SUCCESS", gone
        rc, _ = cnri_resolve(native_server.native_port, name, "tcp")
        assert rc.startswith("RC 100"), rc
    assert "Traceback" not in native_server.log.read_text()


@pytest.mark.slow
async def test_the_cnri_client_administers_in_its_sessions(native_server):
    """CNRI's default: a DH session first (OC 400), one challenge inside it, then requests
    with the session's MAC; over TCP and HTTP, and authenticated resolution the same way."""
    await native_server.ready()
    admin = ("--auth", "300:0.NA/TEST", "--secret", "admin-secret")
    for proto, port in (("tcp", native_server.native_port), ("http", native_server.port)):
        name = f"TEST/session-{proto}"
        made = cnri_admin(
            "create", port, proto, name, *admin,
            "--value", "1", "URL", "https://example.org/s", "--pvalue", "2", "NOTE", "private",
        )  # fmt: skip
        assert made[0] == "RC 1 SUCCESS", made
        done = cnri_admin("modify", port, proto, name, *admin, "--value", "1", "URL", "https://b")
        assert done[0] == "RC 1 SUCCESS", done
        rc, lines = cnri_resolve(port, name, proto, *admin)
        assert rc == "RC 1 SUCCESS" and "private" in "\n".join(lines), (rc, lines)
        assert "https://b" in "\n".join(lines)
        rc, lines = cnri_resolve(port, name, proto)
        assert rc == "RC 1 SUCCESS" and "private" not in "\n".join(lines)
        wrong = cnri_admin(
            "delete", port, proto, name, "--auth", "300:0.NA/TEST", "--secret", "not-it"
        )
        assert wrong[0].startswith("RC 403"), wrong
        gone = cnri_admin("delete", port, proto, name, *admin)
        assert gone[0] == "RC 1 SUCCESS", gone
    log = native_server.log.read_text()
    assert "Traceback" not in log and "admin-secret" not in log
    assert '"HDL-TCP session-setup -" 1 ' in log
    assert '"HDL-TCP create TEST/session-tcp" 402 ' in log  # challenged, then
    assert '"HDL-TCP create (answered) TEST/session-tcp" 1 ' in log
    assert '"HDL-HTTP delete (answered) TEST/session-http" 403 ' in log  # the wrong secret
    assert '"HDL-HTTP delete (answered) TEST/session-http" 1 ' in log


def _cnri_private_key(key: dsa.DSAPrivateKey) -> bytes:
    """A private key file as the reference's tools read it (unencrypted: type 1, then
    DSA_PRIV_KEY x, p, q, g)."""
    numbers = key.private_numbers()
    group = numbers.public_numbers.parameter_numbers

    def big(n: int) -> bytes:
        return codec.string(n.to_bytes(n.bit_length() // 8 + 1, "big"))

    parts = (numbers.x, group.p, group.q, group.g)
    return struct.pack(">I", 1) + codec.string(b"DSA_PRIV_KEY") + b"".join(map(big, parts))


def cnri_tool(home: Path, *arguments: str) -> str:
    """A stock CNRI tool, resolving through the root_info in ``home``."""
    script = '. "$1/cnri_env.sh" && "$JAVA" -Duser.home="$2" $CNRI_JOPTS -cp "$CNRI_CP" "${@:3}"'
    out = subprocess.run(
        ["bash", "-c", script, "-", str(CNRI), str(home), *arguments],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CNRI_BUILD": "/tmp/cnri-build"},
    )
    return out.stdout + out.stderr


def cnri_batch(directory: Path, batch: Path) -> str:
    """CNRI's ``batch.sh``: hdl-genericbatch with ``directory/home/.handle/root_info``."""
    out = subprocess.run(
        ["bash", str(CNRI / "batch.sh"), str(directory), str(batch)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CNRI_BUILD": "/tmp/cnri-build"},
    )
    return out.stdout + out.stderr


@pytest.mark.slow
async def test_stock_cnri_tools_reach_us_through_a_root_info(native_server, tmp_path):
    """hdl-genericbatch through CNRI's batch.sh (sessions always; a secret key, then a DSA
    public key) and HDLList (list handles, public key), resolving the normal way: root ->
    0.NA/TEST -> our HS_SITE, with a root_info that ``handle-server siteinfo --root-info``
    wrote."""
    await native_server.ready()
    home = tmp_path / "home"
    (home / ".handle").mkdir(parents=True)
    config = tmp_path / "site.toml"
    config.write_text(
        (tmp_path / "native.toml").read_text() + f"[server]\nport = {native_server.port}\n"
    )
    handle_server_command(
        "siteinfo", "--config", str(config), "--root-info", "-o", str(home / ".handle/root_info")
    )
    batch = tmp_path / "seckey.txt"
    batch.write_text(
        "AUTHENTICATE SECKEY:300:0.NA/TEST\nadmin-secret\n\n"
        "CREATE TEST/batch-1\n100 HS_ADMIN 86400 1110 ADMIN 300:111111111111:0.NA/TEST\n"
        "1 URL 86400 1110 UTF8 http://example.org/batch-1\n\n"
        "MODIFY TEST/batch-1\n1 URL 86400 1110 UTF8 http://example.org/modified\n\n"
        "ADD TEST/batch-1\n2 EMAIL 86400 1110 UTF8 pid@example.org\n\n"
        "REMOVE 2:TEST/batch-1\n\n"
        "CREATE TEST/batch-2\n100 HS_ADMIN 86400 1110 ADMIN 300:111111111111:0.NA/TEST\n"
        "1 URL 86400 1110 UTF8 http://example.org/batch-2\n\n"
        "DELETE TEST/batch-2\n"
    )
    out = cnri_batch(tmp_path, batch)
    assert "Successes/Total Entries: 6/6" in out, out
    # A DSA identity: its HS_PUBKEY in TEST/keys, LIST_HANDLES and ADD_HANDLE on the prefix.
    key = dsa.generate_private_key(key_size=1024)
    private = tmp_path / "admpriv.bin"
    private.write_bytes(_cnri_private_key(key))
    public = base64.b64encode(signing.encode_public_key(key.public_key())).decode()
    grant = {"index": 101, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": "TEST/keys", "index": 300, "permissions": "110000000001"}}}  # fmt: skip
    async with aiohttp.ClientSession(headers=ADMIN_AUTH) as session:
        for path, values in (
            ("TEST/keys", [{"index": 300, "type": "HS_PUBKEY",
                            "data": {"format": "base64", "value": public}}]),
            ("0.NA/TEST?index=101", [grant]),
        ):  # fmt: skip
            async with session.put(f"{native_server.base}/api/handles/{path}", json=values) as r:
                assert r.status in (200, 201), await r.text()
    batch = tmp_path / "pubkey.txt"
    batch.write_text(
        f"AUTHENTICATE PUBKEY:300:TEST/keys\n{private}\n\n"
        "CREATE TEST/by-key\n100 HS_ADMIN 86400 1110 ADMIN 300:111111111111:TEST/keys\n"
        "1 URL 86400 1110 UTF8 http://example.org/by-key\n"
    )
    out = cnri_batch(tmp_path, batch)
    assert "Successes/Total Entries: 1/1" in out, out
    listed = cnri_tool(
        home, "net.handle.apps.simple.HDLList", "TEST/keys", "300", str(private), "TEST"
    )
    names = {line for line in listed.splitlines() if line.startswith("TEST/")}
    assert names == {"TEST/batch-1", "TEST/by-key", "TEST/keys"}, listed
    assert "Traceback" not in native_server.log.read_text()


@pytest.mark.slow
async def test_certified_answers_and_site_info_verify_with_the_site_key(native_server, tmp_path):
    await native_server.ready()
    public_key, site_json = tmp_path / "pubkey.bin", tmp_path / "site.json"
    # The server's configuration, with the HTTP port --port gave it.
    config = tmp_path / "site.toml"
    config.write_text(
        (tmp_path / "native.toml").read_text() + f"[server]\nport = {native_server.port}\n"
    )
    handle_server_command(
        "siteinfo", "--config", str(config), "--public-key", str(public_key), "--json",
        "-o", str(site_json),
    )  # fmt: skip
    site = json.loads(site_json.read_text())
    (server,) = site["servers"]
    assert base64.b64decode(server["publicKey"]["value"]) == public_key.read_bytes()
    assert {(i["protocol"], i["port"]) for i in server["interfaces"]} == {
        ("TCP", native_server.native_port),
        ("UDP", native_server.native_port),
        ("HTTP", native_server.port),
    }
    for proto, port in (("tcp", native_server.native_port), ("http", native_server.port)):
        rc, lines = cnri_resolve(
            port, "0.NA/TEST", proto, "--type", "HS_SITE", "--certify", "--pubkey", str(public_key)
        )
        assert rc == "RC 1 SUCCESS", (proto, rc, lines)
        assert f"TCP/{native_server.native_port}/adm+qry" in lines[0], lines
    # Over UDP a signed HS_SITE is too long for one datagram (the client asks over TCP); a
    # small record's signed answer fits.
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{native_server.base}/api/handles/TEST/small",
            json=[url_value("https://e.org/")],
            headers=ADMIN_AUTH,
        ) as resp:
            assert resp.status == 201
    rc, lines = cnri_resolve(
        native_server.native_port, "TEST/small", "udp", "--certify", "--pubkey", str(public_key)
    )
    assert rc == "RC 1 SUCCESS" and "https://e.org/" in lines[0], (rc, lines)
    other = tmp_path / "other.bin"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other.write_bytes(signing.encode_public_key(key.public_key()))
    rc, _ = cnri_resolve(
        native_server.native_port, "0.NA/TEST", "tcp", "--certify", "--pubkey", str(other)
    )
    assert "INVALID_SIGNATURE" in rc, rc  # a signature the wrong key cannot verify
    for proto in ("tcp", "udp"):
        shown = cnri_admin("siteinfo", native_server.native_port, proto)
        assert shown[0] == "RC 1 SUCCESS" and "serial:1" in shown[1], shown


#: What CNRI's client sets on a resolution: recursive, cache-certify, public-only.
CNRI_FLAGS = codec.FLAG_RECURSIVE | codec.FLAG_CACHE_CERTIFY | codec.FLAG_PUBLIC_ONLY


def _request(handle: bytes, request_id: int, flags: int = CNRI_FLAGS) -> bytes:
    body = struct.pack(">I", len(handle)) + handle + bytes(8)
    message = codec.encode_message(codec.Message(codec.OC_RESOLUTION, 0, flags, body=body))
    return codec.Envelope(2, 3, request_id=request_id, length=len(message)).encode() + message


def _udp_answers(
    port: int, requests: list[bytes], *, silence: float = 2.0, expect: int | None = None
) -> list[bytes]:
    """What comes back for ``requests``: until ``expect`` answers came, or none for
    ``silence`` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(silence)
        for datagram in requests:
            s.sendto(datagram, ("127.0.0.1", port))
        answers: list[bytes] = []
        try:
            while expect is None or len(answers) < expect:
                answers.append(s.recv(65536))
        except TimeoutError:
            pass
        return answers


@pytest.mark.slow
async def test_udp_never_amplifies_and_is_rate_limited(native_server):
    """An answer longer than one datagram is not sent over UDP: a short RC 2 goes instead,
    and the client asks again over TCP; so no request gets back more than 512 bytes; and one
    address gets at most ``udp_rate`` answers a second."""
    await native_server.ready()
    big = [{"index": i, "type": "DESC", "data": "x" * 200} for i in range(1, 6)]
    async with aiohttp.ClientSession() as session:
        for name, values in (("TEST/small", [url_value("https://s.org")]), ("TEST/big", big)):
            async with session.put(
                f"{native_server.base}/api/handles/{name}", json=values, headers=ADMIN_AUTH
            ) as resp:
                assert resp.status == 201
    port = native_server.native_port
    small = _request(b"TEST/small", 1)
    (answer,) = _udp_answers(port, [small], expect=1)
    assert codec.decode_message(answer[20:]).response_code == codec.RC_SUCCESS
    (refusal,) = _udp_answers(port, [_request(b"TEST/big", 2)], expect=1)  # over 512 bytes
    assert codec.decode_message(refusal[20:]).response_code == codec.RC_ERROR
    assert len(refusal) < 100 and b"x" * 10 not in refusal
    rc, lines = cnri_resolve(port, "TEST/big", "tcp")  # over TCP it is all there
    assert rc.startswith("RC 1 ") and len(lines) == 5
    # The worst amplification: the longest answer over the shortest request.
    smallest = _request(b"T/x", 3)
    assert len(answer) <= MAX_DATAGRAM and MAX_DATAGRAM / len(smallest) < 10
    # 300 requests at once from one address: at most the rate (100 a second) answered; of
    # the rest, every other one gets a short refusal, never longer than its request.
    flood = [_request(b"TEST/small", 10 + n) for n in range(300)]
    started = time.monotonic()
    answered = _udp_answers(port, flood)
    took = time.monotonic() - started - 2.0  # the last two seconds were the wait for more
    codes = [codec.decode_message(a[20:]).response_code for a in answered]
    resolved, slipped = codes.count(codec.RC_SUCCESS), codes.count(codec.RC_ERROR)
    assert 50 <= resolved <= 100 + 100 * took + 5, (resolved, took)
    # (Datagrams may be lost on the way under a flood, so only bounds are certain.)
    assert 10 <= slipped <= (300 - resolved) / 2 + 2, (slipped, resolved)
    assert all(len(a) <= len(flood[0]) for a in answered if a[28:32] == b"\x00\x00\x00\x02")
    # Garbage is dropped, and the service goes on.
    assert _udp_answers(port, [b"\x00" * 7, small[:30], b"\xff" * 600], silence=0.3) == []
    await asyncio.sleep(1.1)  # the bucket fills again
    assert len(_udp_answers(port, [small], expect=1)) == 1
    assert "Traceback" not in native_server.log.read_text()


# -- native answers against REST answers, and mutated messages -----------------------------------

VALUES = st.lists(
    st.fixed_dictionaries(
        {
            "index": st.integers(1, 400),
            "type": st.sampled_from(["URL", "EMAIL", "DESC", "10320/loc", "X.y"]),
            "data": st.text(
                st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40
            ),
            "permissions": st.sampled_from(["1110", "1100", "1010", "0010", "1111"]),
            "ttl": st.integers(0, 2**31 - 1),
        }
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda v: v["index"],
)


@pytest.fixture
async def native_app(aiohttp_client, tmp_path):
    app = create_app(
        make_config(tmp_path, native={"enabled": True, "key_file": str(tmp_path / "n.pem")})
    )
    return app, Api(await aiohttp_client(app))


_EXAMPLES = itertools.count()


def _native(app, handle: bytes, request_id: int = 7, flags: int = CNRI_FLAGS) -> bytes:
    request = _request(handle, request_id, flags)
    envelope = codec.decode_envelope(request)
    # A client of its own per handle: the examples come faster than one address may ask
    # for challenges.
    return app[NATIVE].answer(envelope, request[20:], client=handle.decode(errors="replace"))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=VALUES, name=st.from_regex(r"TEST/[a-z0-9]{1,12}", fullmatch=True))
async def test_native_answers_carry_what_rest_answers_carry(native_app, values, name):
    app, api = native_app
    name += f"-{next(_EXAMPLES)}"  # one app serves every example: a name is never reused
    status, body = await api.put(name, values)
    assert status in (200, 201), body
    _, rest = await api.get(name)  # anonymous: the public values
    answer = await _native(app, name.encode())
    message = codec.decode_message(answer[20:])
    public = rest["values"] if rest else []
    # The quick path (a cached record, answered without a task) says the same bytes.
    request = _request(name.encode(), 7)
    quick = app[NATIVE].quick(request, client="192.0.2.9", transport="tcp")
    if quick is not None:  # (a record with a TTL of 0 is not cached)
        assert quick[:36] + quick[40:] == answer[:36] + answer[40:]  # but the expiration
    # Not public-only, as the reference: challenged if a value is not public, else the same.
    unflagged = codec.decode_message((await _native(app, name.encode(), flags=0))[20:])
    if len(public) < len(values):
        assert unflagged.response_code == codec.RC_AUTHENTICATION_NEEDED
        assert len(unflagged.body) == 1 + 20 + 4 + 16  # digest and nonce: not one value
    else:
        assert unflagged.body == message.body
    if not public:
        assert message.response_code == codec.RC_VALUES_NOT_FOUND
        return
    assert message.response_code == codec.RC_SUCCESS
    handle, native_values = codec.decode_resolution_body(message.body)
    assert handle == name.encode()
    assert [(v.index, v.type, v.data.decode(), v.ttl, v.timestamp) for v in native_values] == [
        (v["index"], v["type"], v["data"]["value"], v["ttl"], _epoch(v["timestamp"]))
        for v in public
    ]
    assert all(v.public_read for v in native_values)


async def test_native_answers_are_counted_on_metrics(native_app):
    app, api = native_app
    await api.put("TEST/m", [url_value("https://m.org")])
    for handle in (b"TEST/m", b"TEST/m", b"TEST/none"):
        await _native(app, handle)
    async with api.client.get("/metrics") as resp:
        text = await resp.text()
    assert 'handle_server_native_requests_total{op="1",rc="1"} 2.0' in text
    assert 'handle_server_native_requests_total{op="1",rc="100"} 1.0' in text


def _epoch(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_mutated_real_messages_get_an_answer_never_a_crash(native_app, data):
    """Bytes of a real request, flipped, cut or lengthened: the answer is a well-formed
    message (an error, mostly) in the request's version, and nothing is written."""
    app, api = native_app
    message = bytearray(REQUEST[20:])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(message) - 1))
        message[at] = data.draw(st.integers(0, 255))
    message = bytes(message[: data.draw(st.integers(0, len(message)))])
    message += data.draw(st.binary(max_size=16))
    envelope = codec.Envelope(2, 3, request_id=9, length=len(message))
    answer = await app[NATIVE].answer(envelope, message)
    back = codec.decode_envelope(answer)
    assert (back.major, back.minor, back.request_id) == (2, 3, 9)
    assert back.length == len(answer) - 20
    reply = codec.decode_message(answer[20:])
    assert reply.response_code != 0
    assert (await api.list({"prefix": "TEST"}))[1]["totalCount"] == "0"


def _tcp_exchange(port: int, data: bytes) -> bytes:
    """``data`` over a new TCP connection, then the write side closed; what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _mutated(data, original: bytes) -> bytes:
    message = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(message) - 1))
        message[at] = data.draw(st.integers(0, 255))
    return bytes(message[: data.draw(st.integers(0, len(message)))]) + data.draw(
        st.binary(max_size=16)
    )


@pytest.mark.slow
async def test_mutated_messages_over_the_real_transports(native_server):
    """Mutated real requests (resolution, create) over TCP and UDP to a running server: each
    TCP answer is whole, well-formed messages or a closed connection; nothing crashes, hangs
    or changes the store; the server answers as before afterwards."""
    await native_server.ready()
    port = native_server.native_port
    create = _exchange(
        {"request_id": 5},
        codec.OC_CREATE_HANDLE,
        _values_body("TEST/f", [HandleValue(1, "URL", b"x")]),
    )
    originals = [REQUEST, create[0].encode() + create[1]]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(0.02)

    @settings(max_examples=300, deadline=None, database=None)
    @given(data=st.data())
    def exchange(data):
        request = _mutated(data, data.draw(st.sampled_from(originals)))
        answer = _tcp_exchange(port, request)
        while answer:
            envelope = codec.decode_envelope(answer)
            assert len(answer) >= 20 + envelope.length
            assert codec.decode_message(answer[20 : 20 + envelope.length]).response_code != 0
            answer = answer[20 + envelope.length :]
        udp.sendto(request, ("127.0.0.1", port))
        with contextlib.suppress(TimeoutError):
            assert len(udp.recv(4096)) <= MAX_DATAGRAM

    await asyncio.to_thread(exchange)
    udp.close()
    rc, _ = cnri_resolve(port, "TEST/f", "tcp")
    assert rc.startswith("RC 100"), rc  # no mutated create got through
    rc, lines = cnri_resolve(port, "0.NA/TEST", "udp", "--type", "HS_VLIST")
    assert rc == "RC 1 SUCCESS", (rc, lines)
    assert "Traceback" not in native_server.log.read_text()


# -- challenge-response, in process ----------------------------------------------------------------


def _exchange(envelope_fields: dict, op: int, body: bytes, flags: int = 0) -> tuple:
    message = codec.encode_message(codec.Message(op, 0, flags, body=body))
    envelope = codec.Envelope(2, 5, length=len(message), **envelope_fields)
    return envelope, message


async def _send(app, op: int, body: bytes, *, flags: int = 0, session: int = 0) -> list:
    """The messages of the answer to one request, as (envelope, message) pairs."""
    envelope, message = _exchange({"session_id": session, "request_id": 9}, op, body, flags)
    data = await app[NATIVE].answer(envelope, message, client="192.0.2.7")
    replies = []
    while data:
        got = codec.decode_envelope(data)
        replies.append((got, codec.decode_message(data[20 : 20 + got.length])))
        data = data[20 + got.length :]
    return replies


def _answer_body(kind: bytes, identity: tuple[str, int], proof: bytes) -> bytes:
    handle, index = identity
    return (
        codec.string(kind) + codec.string(handle.encode()) + struct.pack(">I", index)
        + codec.string(proof)
    )  # fmt: skip


def _challenge_of(reply) -> tuple[int, bytes, bytes]:
    envelope, message = reply
    assert message.response_code == codec.RC_AUTHENTICATION_NEEDED
    assert message.body[0] == codec.HASH_SHA1
    digest, nonce = message.body[1:21], codec.Reader(message.body, 21).string()
    return envelope.session_id, nonce, digest


def _seckey_proof(secret: bytes, nonce: bytes, digest: bytes) -> bytes:
    return b"\x02" + hashlib.sha1(secret + nonce + digest + secret).digest()


async def _as_admin(app, op: int, body: bytes, *, flags: int = 0, secret: bytes = b"admin-secret"):
    """``op`` carried out as the configured admin (300:0.NA/TEST) through a challenge."""
    (challenge,) = await _send(app, op, body, flags=flags)
    session, nonce, digest = _challenge_of(challenge)
    assert digest == hashlib.sha1(challenge_request_signed_part(op, body, flags)).digest()
    proof = _answer_body(b"HS_SECKEY", ("0.NA/TEST", 300), _seckey_proof(secret, nonce, digest))
    return session, await _send(app, codec.OC_RESPONSE_TO_CHALLENGE, proof, session=session)


def challenge_request_signed_part(op: int, body: bytes, flags: int) -> bytes:
    _, message = _exchange({}, op, body, flags)
    return message[: 24 + len(body)]


def _values_body(handle: str, values: list[HandleValue]) -> bytes:
    encoded = b"".join(codec.encode_value(v) for v in values)
    return codec.string(handle.encode()) + struct.pack(">I", len(values)) + encoded


async def test_list_handles_after_a_challenge_comes_in_continued_messages(native_app):
    app, api = native_app
    names = sorted(f"TEST/l{i:03d}" for i in range(120))
    for name in names:
        assert (await api.put(name, [url_value("https://e.org/")]))[0] == 201
    session, replies = await _as_admin(app, codec.OC_LIST_HANDLES, codec.string(b"0.NA/TEST"))
    assert [m.response_code for _, m in replies] == [codec.RC_SUCCESS] * 3
    assert [m.flag(codec.FLAG_CONTINUOUS) for _, m in replies] == [True, True, False]
    assert all(e.session_id == session and e.request_id == 9 for e, _ in replies)
    listed = []
    for _, message in replies:
        reader = codec.Reader(message.body)
        listed += [reader.string().decode() for _ in range(reader.int4())]
    assert sorted(listed) == names
    # The answer was taken with its challenge: sent again, it finds none (405).
    proof = _answer_body(b"HS_SECKEY", ("0.NA/TEST", 300), b"\x02" + bytes(20))
    ((_, replayed),) = await _send(app, codec.OC_RESPONSE_TO_CHALLENGE, proof, session=session)
    assert replayed.response_code == codec.RC_AUTHEN_TIMEOUT
    # A wrong secret: 403, and nothing listed.
    _, ((_, refused),) = await _as_admin(
        app, codec.OC_LIST_HANDLES, codec.string(b"0.NA/TEST"), secret=b"wrong"
    )
    assert refused.response_code == 403
    # A prefix not homed here: 301 at once, no challenge.
    ((_, other),) = await _send(app, codec.OC_LIST_HANDLES, codec.string(b"0.NA/OTHER"))
    assert other.response_code == codec.RC_SERVER_NOT_RESP


async def test_writes_need_a_proof_and_change_nothing_without_one(native_app):
    app, api = native_app
    body = _values_body("TEST/w", [HandleValue(1, "URL", b"https://e.org/w")])
    ((_, challenge),) = await _send(app, codec.OC_CREATE_HANDLE, body)
    assert challenge.response_code == codec.RC_AUTHENTICATION_NEEDED
    assert challenge.flag(codec.FLAG_REQUEST_DIGEST)
    assert (await api.get("TEST/w"))[0] == 404
    # Over UDP a write is refused outright, as on the reference's query-only port.
    envelope, message = _exchange({"request_id": 3}, codec.OC_CREATE_HANDLE, body)
    answer = await app[NATIVE].answer(envelope, message, transport="udp")
    assert codec.decode_message(answer[20:]).response_code == codec.RC_PROTOCOL_ERROR
    # Minting: the answer names the handle made under the stem.
    stem = _values_body("TEST/", [HandleValue(1, "URL", b"https://e.org/m")])
    _, ((_, minted),) = await _as_admin(app, codec.OC_CREATE_HANDLE, stem, flags=codec.FLAG_MINT)
    assert minted.response_code == codec.RC_SUCCESS
    name = codec.Reader(minted.body).string().decode()
    assert name.startswith("TEST/") and (await api.get(name))[0] == 200
    # Its history says who made it: the identity the challenge proved.
    status, history = await api._call("GET", f"/api/history/{name}", headers=ADMIN_AUTH)
    assert status == 200
    assert [(v["operation"], v["by"]) for v in history["versions"]] == [("create", "300:0.NA/TEST")]


async def test_a_private_value_needs_a_proof_to_be_resolved(native_app):
    app, api = native_app
    values = [url_value("https://e.org/p"), {"index": 2, "type": "NOTE", "data": "hidden",
              "permissions": "1100"}]  # fmt: skip
    assert (await api.put("TEST/p", values))[0] == 201
    request = codec.string(b"TEST/p") + bytes(8)
    ((_, public),) = await _send(app, codec.OC_RESOLUTION, request, flags=codec.FLAG_PUBLIC_ONLY)
    assert b"hidden" not in public.body and b"https://e.org/p" in public.body
    _, ((_, answer),) = await _as_admin(app, codec.OC_RESOLUTION, request)
    _, shown = codec.decode_resolution_body(answer.body)
    assert {v.index: v.data for v in shown} == {1: b"https://e.org/p", 2: b"hidden"}


async def test_the_quick_path_answers_cached_records_only_as_it_should(native_app):
    app, api = native_app
    assert (await api.put("TEST/q", [url_value("https://e.org/q")]))[0] == 201
    native = app[NATIVE]

    def quick(flags: int = CNRI_FLAGS, handle: bytes = b"TEST/q") -> bytes | None:
        request = _request(handle, 11, flags)
        return native.quick(request, client=None, transport="udp")

    assert quick() is None  # not cached yet
    slow = await _native(app, b"TEST/q", request_id=11)  # now it is
    fast = quick()
    assert fast is not None and fast[:36] + fast[40:] == slow[:36] + slow[40:]
    for flags in (
        CNRI_FLAGS & ~codec.FLAG_PUBLIC_ONLY,  # may be challenged
        CNRI_FLAGS | codec.FLAG_AUTHORITATIVE,  # reads past the cache
        CNRI_FLAGS | codec.FLAG_CERTIFY,  # signed
        CNRI_FLAGS | codec.FLAG_REQUEST_DIGEST,
    ):
        assert quick(flags) is None, hex(flags)
    # A write forgets the cached record: the quick path then has nothing to say.
    assert (await api.put("TEST/q", [url_value("https://e.org/changed")]))[0] == 200
    assert quick() is None


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _native_config(tmp_path, **tables):
    return make_config(
        tmp_path, native={"enabled": True, "key_file": str(tmp_path / "n.pem")}, **tables
    )


async def test_a_kept_quick_answer_is_what_answers_makes_until_its_entry_goes(
    aiohttp_client, tmp_path
):
    """The second time a request is answered by ``quick`` the answer is the one kept from the
    first, with the request id and the time put in: byte for byte what ``answers`` makes,
    counted and logged as every answer; kept no longer than its cache entry (a write, the
    end of its TTL)."""
    clock = _Clock()
    app = create_app(_native_config(tmp_path), clock=clock)
    api = Api(await aiohttp_client(app))
    assert (await api.put("TEST/k", [url_value("https://e.org/k", ttl=60)]))[0] == 201
    native, cache = app[NATIVE], app[NATIVE].handles.cache

    async def slow(request_id: int) -> bytes:
        request = _request(b"TEST/k", request_id)
        return await native.answer(codec.decode_envelope(request), request[20:], client="x")

    def quick(request_id: int) -> bytes | None:
        return native.quick(_request(b"TEST/k", request_id), client="x", transport="udp")

    await slow(1)  # now cached
    assert quick(2) == await slow(2)  # made, and kept
    for request_id in (3, 0xFFFFFFFF):
        hits = cache.stats.hits
        kept = quick(request_id)
        await asyncio.sleep(0)  # counted (and logged) once sent, at the loop's next turn
        assert cache.stats.hits == hits + 1  # counted as every hit
        assert kept == await slow(request_id)
    clock.now += 1.5  # a new second: a new expiration
    assert quick(4) == await slow(4)
    assert codec.decode_message(quick(5)[20:]).expiration == int(clock.now) + 12 * 3600
    # A write: the kept answer goes with its entry.
    assert (await api.put("TEST/k", [url_value("https://e.org/new", ttl=60)]))[0] == 200
    assert quick(6) is None
    fresh = await slow(7)
    assert b"https://e.org/new" in fresh and quick(7) == fresh and quick(8) == await slow(8)
    # The TTL ends: nothing kept is answered.
    clock.now += 61
    assert quick(9) is None


async def test_a_kept_quick_answer_goes_when_its_entry_is_evicted(aiohttp_client, tmp_path):
    """An entry evicted to make room is one whose later change the cache is not told of:
    what was kept from it must go at once, not at the next write."""
    app = create_app(_native_config(tmp_path, cache={"max_entries": 1}))
    api = Api(await aiohttp_client(app))
    native = app[NATIVE]
    for name in ("TEST/e1", "TEST/e2"):
        assert (await api.put(name, [url_value(f"https://e.org/{name}")]))[0] == 201

    def quick(name: bytes) -> bytes | None:
        return native.quick(_request(name, 1), client=None, transport="tcp")

    await _native(app, b"TEST/e1")
    assert quick(b"TEST/e1") is not None and quick(b"TEST/e1") is not None  # kept
    await _native(app, b"TEST/e2")  # takes the only place
    assert quick(b"TEST/e1") is None


async def test_a_kept_quick_answer_goes_when_another_node_writes(aiohttp_client, tmp_path):
    """Two servers on one store: a write through one is not answered from what the other
    kept."""
    config = _native_config(tmp_path)
    app = create_app(config)
    api, other = Api(await aiohttp_client(app)), Api(await aiohttp_client(create_app(config)))
    assert (await api.put("TEST/n", [url_value("https://e.org/old")]))[0] == 201
    native = app[NATIVE]
    await _native(app, b"TEST/n")
    kept = native.quick(_request(b"TEST/n", 1), client=None, transport="udp")
    assert kept is not None and b"https://e.org/old" in kept
    assert (await other.put("TEST/n", [url_value("https://e.org/new")]))[0] == 200
    assert native.quick(_request(b"TEST/n", 1), client=None, transport="udp") is None
    answer = await _native(app, b"TEST/n")
    assert b"https://e.org/new" in answer and b"https://e.org/old" not in answer


@pytest.mark.parametrize("kind", ["rsa", "dsa"])
async def test_an_identity_with_a_public_key_administers(native_app, kind):
    """An HS_PUBKEY identity (RSA or DSA, in the reference's encoding) proves itself by
    signing the nonce and digest; its HS_ADMIN then lets it add a value."""
    app, api = native_app
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = dsa.generate_private_key(key_size=1024)
    public = base64.b64encode(signing.encode_public_key(key.public_key())).decode()
    holder = [{"index": 300, "type": "HS_PUBKEY", "data": {"format": "base64", "value": public}}]
    assert (await api.put("TEST/keyholder", holder))[0] == 201
    admin = {"index": 100, "type": "HS_ADMIN",
             "data": {"format": "admin", "value": {"handle": "TEST/keyholder", "index": 300,
                                                   "permissions": "011111111111"}}}  # fmt: skip
    assert (await api.put("TEST/owned", [admin, url_value("https://e.org/o")]))[0] == 201
    body = _values_body("TEST/owned", [HandleValue(5, "EMAIL", b"pid@e.org")])
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for signer, expected in ((other, 403), (key, codec.RC_SUCCESS)):
        (challenge,) = await _send(app, codec.OC_ADD_VALUE, body)
        session, nonce, digest = _challenge_of(challenge)
        hash_name, signature = signing.sign(signer, nonce + digest)
        proof = _answer_body(
            b"HS_PUBKEY", ("TEST/keyholder", 300), codec.string(hash_name) + codec.string(signature)
        )
        ((_, done),) = await _send(app, codec.OC_RESPONSE_TO_CHALLENGE, proof, session=session)
        assert (done.op_code, done.response_code) == (codec.OC_ADD_VALUE, expected)
    _, record = await api.get("TEST/owned")
    assert {v["index"] for v in record["values"]} == {1, 5, 100}


async def test_tcp_connections_are_bounded_and_silent_ones_closed(native_app):
    """At the limit a new connection is closed at once; one that sends nothing whole within
    the timeout is closed; the others are answered as before."""
    app, api = native_app
    assert (await api.put("TEST/t", [url_value("https://e.org/t")]))[0] == 201
    tcp = NativeTcp(app[NATIVE], max_message_bytes=4096, timeout=1.0, max_connections=3)
    server = await asyncio.get_running_loop().create_server(tcp.protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # refused: closed at once
        writer.close()
        assert tcp.refused == 1
        started = time.monotonic()
        for silent_reader, _ in silent:  # closed after the timeout, having sent nothing
            assert await asyncio.wait_for(silent_reader.read(), 5) == b""
        assert 0.8 <= time.monotonic() - started <= 4
        for _, silent_writer in silent:
            silent_writer.close()
        await asyncio.sleep(0.1)
        assert tcp.open == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_request(b"TEST/t", 4))
        answer = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        writer.close()
        assert codec.decode_message(answer[20:]).response_code == codec.RC_SUCCESS
    finally:
        server.close()
        await server.wait_closed()
