"""/api/sessions, the Handle authorization scheme, and failed-authentication throttling."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from handle_server import keys
from handle_server.app import create_app
from handle_server.auth import pubkeys
from handle_server.errors import AuthenticationFailed, TooManyFailures
from handle_server.ops.forwarded import TrustedProxies

from .helpers import (
    ADMIN,
    ADMIN_AUTH,
    OTHER_AUTH,
    SECRET,
    Api,
    basic,
    handle_header,
    make_config,
    open_session,
    prove,
    reference_signature,
    url_value,
)


async def test_a_session_proves_an_identity_once_then_carries_it(api: Api):
    session = await open_session(api, ADMIN)
    assert session["authenticated"] is False and len(base64.b64decode(session["nonce"])) == 32
    assert session["keyDerivation"]["alg"] == "PBKDF2-HMAC-SHA256"
    only_session = handle_header(session["sessionId"])
    # Before proving anything the session is anonymous: a write is a challenge.
    status, body = await api.put("TEST/s", [url_value("https://s.org")], headers=only_session)
    assert (status, body["responseCode"]) == (401, 402)
    status, body = await prove(api, session, ADMIN, SECRET)
    assert status == 200 and body["authenticated"] is True and body["id"] == ADMIN
    # The proof gives a new session id; the one known before it is closed (whoever handed
    # it to the prover gains nothing).
    assert body["sessionId"] != session["sessionId"]
    status, answer = await api.put("TEST/s", [url_value("https://s.org")], headers=only_session)
    assert (status, answer["responseCode"]) == (401, 403)
    only_session = handle_header(body["sessionId"])
    # From now on the new session id alone is the identity.
    status, _ = await api.put("TEST/s", [url_value("https://s.org")], headers=only_session)
    assert status == 201
    status, body = await api._call("GET", "/api/sessions/this", headers=only_session)
    assert status == 200 and body["id"] == ADMIN
    # Ending it: 204, and the id is refused from then on.
    assert (await api._call("DELETE", "/api/sessions/this", headers=only_session))[0] == 204
    status, body = await api.put("TEST/s", [url_value("https://t.org")], headers=only_session)
    assert (status, body["responseCode"]) == (401, 403)
    status, body = await api._call("GET", "/api/sessions/this", headers=only_session)
    assert status == 403 and "No open session" in body["error"]
    assert (await api._call("DELETE", "/api/sessions/this", headers=only_session))[0] == 403


async def test_a_wrong_signature_or_secret_is_401_and_leaves_the_session_anonymous(api: Api):
    session = await open_session(api, ADMIN)
    status, body = await prove(api, session, ADMIN, "not-the-secret")
    assert status == 401 and body["authenticated"] is False
    assert "Authentication failed" in body["error"]
    # A signature over another nonce does not verify either.
    other = await open_session(api, ADMIN)
    replay = {**session, "nonce": other["nonce"]}
    assert (await prove(api, replay, ADMIN, SECRET))[0] == 401
    # Unsupported algorithms (MD5 among them) are refused, naming the supported ones.
    headers = handle_header(
        session["sessionId"], id=quote(ADMIN), type="HS_SECKEY", alg="MD5",
        cnonce="AAAA", signature="AAAA",
    )  # fmt: skip
    status, body = await api._call("PUT", "/api/sessions/this", headers=headers)
    assert status == 401 and "HMAC-SHA256" in body["error"] and "PBKDF2" in body["error"]
    headers = handle_header(session["sessionId"], id=quote(ADMIN), type="HS_SECKEY")
    status, body = await api._call("PUT", "/api/sessions/this", headers=headers)
    assert status == 401 and "Missing fields" in body["error"]


@pytest.mark.parametrize("alg", ["HMAC-SHA256", "HMAC-SHA1", "SHA256", "SHA1", "sha-1", "SHA-256"])
async def test_reference_clients_prove_with_the_secret_itself(api: Api, alg: str):
    for secret, status in (("not-it", 401), (SECRET, 200)):
        session = await open_session(api)
        cnonce, signature = reference_signature(alg.upper(), secret, session["nonce"])
        headers = handle_header(
            session["sessionId"], version="0", id=quote(ADMIN, safe=""), type="HS_SECKEY",
            alg=alg, cnonce=cnonce, signature=signature,
        )  # fmt: skip
        got, body = await api._call("PUT", "/api/sessions/this", headers=headers)
        assert got == status, body
    only_session = handle_header(body["sessionId"])
    assert (await api.put("TEST/ref", [url_value("https://r.org")], headers=only_session))[0] in (
        200,
        201,
    )


async def test_key_derivation_does_not_tell_which_identities_exist(api: Api):
    real = (await open_session(api, ADMIN))["keyDerivation"]
    ghost = (await open_session(api, "300:TEST/nobody"))["keyDerivation"]
    again = (await open_session(api, "300:TEST/nobody"))["keyDerivation"]
    assert set(real) == set(ghost) and real["iterations"] == ghost["iterations"]
    assert ghost == again and ghost["salt"] != real["salt"]


async def test_sessions_of_one_identity_are_bounded(aiohttp_client, tmp_path, storage_table):
    config = make_config(
        tmp_path, storage=storage_table, auth={"max_sessions_per_identity": 2, "max_sessions": 4}
    )
    api = Api(await aiohttp_client(create_app(config)))
    mine = []
    for _ in range(2):
        status, body = await api._call("POST", "/api/sessions", headers=OTHER_AUTH)
        mine.append(body["sessionId"])
    # One identity opening many sessions evicts only its own oldest, never the others'.
    for _ in range(5):
        status, body = await api._call("POST", "/api/sessions", headers=ADMIN_AUTH)
        assert status == 201
    newest = body["sessionId"]
    for session_id in mine:
        status, body = await api._call(
            "GET", "/api/sessions/this", headers=handle_header(session_id)
        )
        assert status == 200 and body["id"] == "300:0.NA/10.5555"
    assert (await api._call("GET", "/api/sessions/this", headers=handle_header(newest)))[0] == 200


async def test_basic_credentials_open_an_authenticated_session(api: Api):
    status, body = await api._call("POST", "/api/sessions", headers=ADMIN_AUTH)
    assert status == 201 and body["authenticated"] is True and body["id"] == ADMIN
    status, _ = await api.put(
        "TEST/b", [url_value("https://b.org")], headers=handle_header(body["sessionId"])
    )
    assert status == 201
    status, body = await api._call("POST", "/api/sessions", headers=basic(ADMIN, "wrong"))
    assert status == 401 and body["authenticated"] is False


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/api/sessions", handle_header("abc"), 400),
        ("GET", "/api/sessions", {}, 405),
        ("GET", "/api/sessions/this", {}, 403),
        ("GET", "/api/sessions/this", handle_header("no-such-session"), 403),
        ("GET", "/api/sessions/other", {}, 404),
        ("PUT", "/api/sessions/this", {"Authorization": "Handle !!"}, 400),
    ],
)
async def test_bad_session_requests(api: Api, method, path, headers, status):
    got, body = await api._call(method, path, headers=headers)
    assert got == status and body is not None


async def test_session_ids_unknown_to_the_api_are_refused(api: Api):
    status, body = await api.get("TEST/x", headers=handle_header("forged"))
    assert (status, body["responseCode"]) == (401, 403)
    status, body = await api.get("TEST/x", headers={"Authorization": 'Handle id="300:X/Y"'})
    assert (status, body["responseCode"]) == (401, 403) and "sessionId" in body["message"]


# -- throttling ---------------------------------------------------------------------------------


@pytest.fixture
async def strict(aiohttp_client, tmp_path) -> Api:
    config = make_config(tmp_path, auth={"failure_limit": 3, "failure_window": 60})
    return Api(await aiohttp_client(create_app(config)))


async def test_repeated_failures_are_throttled_for_that_identity_and_address(strict: Api):
    wrong = basic(ADMIN, "guess")
    for _ in range(3):
        status, body = await strict.put("TEST/t", [url_value("https://t.org")], headers=wrong)
        assert (status, body["responseCode"]) == (401, 403)
    status, body = await strict.put("TEST/t", [url_value("https://t.org")], headers=wrong)
    assert status == 429 and body["responseCode"] == 3
    retry_after = int(strict.last.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    # The right secret from this address is throttled too while the window lasts (else
    # guessing goes on).
    assert (await strict.put("TEST/t", [url_value("https://t.org")]))[0] == 429
    # Reads without credentials are not affected.
    assert (await strict.get("0.NA/TEST"))[0] == 200


async def test_nobody_can_lock_an_identity_out_from_elsewhere(aiohttp_client, tmp_path):
    config = make_config(tmp_path, auth={"failure_limit": 2, "failure_window": 60})
    app = create_app(config)
    api = Api(await aiohttp_client(app))
    auth = app[keys.SERVICE].authenticator
    # Straight at the authenticator, to give several client addresses on one test server.
    for client in ("192.0.2.1", "192.0.2.1", "192.0.2.7", "192.0.2.8"):
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate(basic(ADMIN, "guess")["Authorization"], client=client)
    # The guessed identity, from the guessing address: refused, even with the right secret.
    with pytest.raises(TooManyFailures):
        await auth.authenticate(basic(ADMIN, SECRET)["Authorization"], client="192.0.2.1")
    # The same identity from anywhere else, with its secret: in (guesses elsewhere do not
    # lock it out).
    right = basic(ADMIN, SECRET)["Authorization"]
    assert str(await auth.authenticate(right, client="192.0.2.2")) == ADMIN
    # Another identity from the guessing address: in, it is not the one being guessed.
    other = basic("300:0.NA/10.5555", "other-secret")["Authorization"]
    assert str(await auth.authenticate(other, client="192.0.2.1")) == "300:0.NA/10.5555"
    assert (await api.get("0.NA/TEST"))[0] == 200


async def test_malformed_credentials_do_not_block_a_right_secret(aiohttp_client, tmp_path):
    config = make_config(tmp_path, auth={"failure_limit": 3, "failure_window": 60})
    api = Api(await aiohttp_client(create_app(config)))
    for _ in range(3):
        status, _ = await api.get("TEST/x", headers={"Authorization": "Basic !!!"})
        assert status == 401
    status, body = await api.get("TEST/x", headers={"Authorization": "Basic !!!"})
    assert (status, body["responseCode"]) == (429, 3)  # more of the same: refused at once
    status, _ = await api.put("TEST/ok", [url_value("https://ok.org")])
    assert status == 201  # the admin's right secret from that very address


async def test_a_burst_of_guesses_is_checked_at_most_failure_limit_times(
    aiohttp_client, tmp_path, storage_table
):
    """100 wrong secrets at once: each check that runs is a 401, each refused before its
    check a 429. Without counting the checks in progress all 100 were checked (no 429)."""
    config = make_config(
        tmp_path, storage=storage_table, auth={"failure_limit": 10, "failure_window": 60}
    )
    api = Api(await aiohttp_client(create_app(config)))
    wrong = basic("300:TEST/someone", "guess")
    answers = await asyncio.gather(
        *(api.put("TEST/t", [url_value("https://t.org")], headers=wrong) for _ in range(100))
    )
    statuses = [status for status, _ in answers]
    assert statuses.count(401) <= 10 and statuses.count(429) >= 90, statuses
    assert (await api.put("TEST/t", [url_value("https://t.org")]))[0] == 201  # the admin


async def test_the_last_free_attempt_goes_to_one_of_two_checks_at_once(
    aiohttp_client, tmp_path, storage_table
):
    """One failure short of the limit, two wrong secrets checked at once (two may hash at
    once): one is checked, the other refused. Before a check counted itself as pending ahead
    of its read of the store, both read the same count and both were checked."""
    config = make_config(
        tmp_path, storage=storage_table, auth={"failure_limit": 10, "failure_window": 60}
    )
    api = Api(await aiohttp_client(create_app(config)))
    wrong = basic("300:TEST/someone", "guess")
    for _ in range(9):
        assert (await api.get("TEST/t", headers=wrong))[0] == 401
    answers = await asyncio.gather(*(api.get("TEST/t", headers=wrong) for _ in range(2)))
    assert sorted(status for status, _ in answers) == [401, 429], answers


# -- sessions and throttling shared by every node on one store ---------------------------------


@pytest.fixture
async def two_nodes(aiohttp_client, tmp_path, storage_table) -> tuple[Api, Api]:
    """Two servers on one store, as two processes or two machines would be."""
    config = make_config(tmp_path, storage=storage_table, auth={"failure_limit": 3})
    return (
        Api(await aiohttp_client(create_app(config))),
        Api(await aiohttp_client(create_app(config))),
    )


async def test_a_session_opened_on_one_node_is_known_on_every_other(two_nodes):
    a, b = two_nodes
    session = await open_session(a, ADMIN)
    only_session = handle_header(session["sessionId"])
    # Anonymous on both, with the same nonce.
    status, body = await b._call("GET", "/api/sessions/this", headers=only_session)
    assert status == 200 and body["nonce"] == session["nonce"] and not body["authenticated"]
    # Proved on B, used on A.
    status, proved = await prove(b, session, ADMIN, SECRET)
    assert status == 200
    only_session = handle_header(proved["sessionId"])
    assert (await a.put("TEST/n", [url_value("https://n.org")], headers=only_session))[0] == 201
    # Closed on A, refused on B.
    assert (await a._call("DELETE", "/api/sessions/this", headers=only_session))[0] == 204
    status, body = await b.put("TEST/n", [url_value("https://m.org")], headers=only_session)
    assert (status, body["responseCode"]) == (401, 403)
    assert (await b._call("GET", "/api/sessions/this", headers=only_session))[0] == 403


async def test_key_derivation_of_an_unknown_identity_is_the_same_on_every_node(two_nodes):
    a, b = two_nodes
    on_a = (await open_session(a, "300:TEST/nobody"))["keyDerivation"]
    assert (await open_session(b, "300:TEST/nobody"))["keyDerivation"] == on_a


async def test_failures_on_one_node_throttle_on_every_other(two_nodes):
    a, b = two_nodes
    wrong = basic(ADMIN, "guess")
    for node in (a, b, a):
        status, _ = await node.put("TEST/t", [url_value("https://t.org")], headers=wrong)
        assert status == 401
    for node in (a, b):
        status, body = await node.put("TEST/t", [url_value("https://t.org")])
        assert status == 429 and body["responseCode"] == 3


async def test_a_session_outlives_a_restart(aiohttp_client, tmp_path, storage_table):
    config = make_config(tmp_path, storage=storage_table)
    first = create_app(config)
    api = Api(await aiohttp_client(first))
    status, session = await prove(api, await open_session(api, ADMIN), ADMIN, SECRET)
    assert status == 200
    await api.client.close()
    again = Api(await aiohttp_client(create_app(config)))
    status, body = await again._call(
        "GET", "/api/sessions/this", headers=handle_header(session["sessionId"])
    )
    assert status == 200 and body["id"] == ADMIN


async def test_session_ids_are_signed_and_never_stored(api: Api, tmp_path):
    status, session = await prove(api, await open_session(api, ADMIN), ADMIN, SECRET)
    assert status == 200
    sid = session["sessionId"]
    # Any change to the id makes it another, unknown session.
    for forged in (sid[:-2] + ("AA" if sid[-2:] != "AA" else "BB"), sid[:10], sid + "A", "x" * 54):
        status, body = await api.get("TEST/x", headers=handle_header(forged))
        assert (status, body["responseCode"]) == (401, 403)
    # The store knows the session by a digest: the id, a bearer credential, is nowhere in it.
    db = tmp_path / "handles.sqlite3"
    if db.exists():
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("handles.sqlite3*"))
        assert hashlib.sha256(sid.encode()).digest() in stored
        assert sid.encode() not in stored and base64.urlsafe_b64decode(sid + "==") not in stored


async def test_sessions_expire_when_idle(aiohttp_client, tmp_path, storage_table):
    now = [1_800_000_000.0]
    config = make_config(tmp_path, storage=storage_table, auth={"session_idle_timeout": 600})
    api = Api(await aiohttp_client(create_app(config, clock=lambda: now[0])))

    async def looks(session: dict) -> int:
        headers = handle_header(session["sessionId"])
        return (await api._call("GET", "/api/sessions/this", headers=headers))[0]

    # An anonymous session ends idle_timeout after it was opened.
    anonymous = await open_session(api, ADMIN)
    status, proved = await prove(api, await open_session(api, ADMIN), ADMIN, SECRET)
    assert status == 200
    now[0] += 300
    assert await looks(anonymous) == 200 and await looks(proved) == 200
    now[0] += 301
    assert await looks(anonymous) == 403
    assert (await prove(api, anonymous, ADMIN, SECRET))[0] == 403
    # A proved one lives on while it is used (its expiry moves at most once a minute)...
    for _ in range(5):
        assert await looks(proved) == 200
        now[0] += 500
    # ... and ends once it was not used for idle_timeout.
    now[0] += 601
    assert await looks(proved) == 403


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted proxy that names nobody
        ("127.0.0.1", ["192.0.2.9"], "192.0.2.9"),
        ("127.0.0.1", ["198.51.100.1, 192.0.2.9"], "192.0.2.9"),  # the left one is a claim
        ("127.0.0.1", ["192.0.2.9, 10.1.2.3"], "192.0.2.9"),  # through two trusted proxies
        ("127.0.0.1", ["192.0.2.9", "10.1.2.3"], "192.0.2.9"),  # the same, as two headers
        ("127.0.0.1", ["junk, 192.0.2.9"], "192.0.2.9"),
        ("127.0.0.1", ["192.0.2.9, junk"], "127.0.0.1"),  # nothing past junk is believed
        ("203.0.113.5", ["192.0.2.9"], "203.0.113.5"),  # not a trusted proxy: ignored
    ],
)
def test_the_client_behind_trusted_proxies(peer, forwarded, client):
    assert TrustedProxies(["127.0.0.0/8", "10.0.0.0/8"]).client(peer, forwarded) == client


async def test_throttling_follows_x_forwarded_for_from_a_trusted_proxy(aiohttp_client, tmp_path):
    config = make_config(
        tmp_path,
        auth={"failure_limit": 2, "failure_window": 60},
        server={"trusted_proxies": ["127.0.0.1"]},
    )
    api = Api(await aiohttp_client(create_app(config)))
    attacker, user = {"X-Forwarded-For": "192.0.2.66"}, {"X-Forwarded-For": "192.0.2.10"}
    for _ in range(2):
        status, _ = await api.get("TEST/x", headers={**basic(ADMIN, "guess"), **attacker})
        assert status == 401
    status, _ = await api.put(
        "TEST/a", [url_value("https://a.org")], headers={**ADMIN_AUTH, **attacker}
    )
    assert status == 429
    # Behind the same proxy, another client with the admin's secret is not locked out.
    status, _ = await api.put(
        "TEST/a", [url_value("https://a.org")], headers={**ADMIN_AUTH, **user}
    )
    assert status == 201


async def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(aiohttp_client, tmp_path):
    config = make_config(tmp_path, auth={"failure_limit": 2, "failure_window": 60})
    api = Api(await aiohttp_client(create_app(config)))
    for n in range(2):
        spoofed = {**basic(ADMIN, "guess"), "X-Forwarded-For": f"192.0.2.{n}"}
        assert (await api.get("TEST/x", headers=spoofed))[0] == 401
    headers = {**ADMIN_AUTH, "X-Forwarded-For": "192.0.2.200"}
    assert (await api.put("TEST/a", [url_value("https://a.org")], headers=headers))[0] == 429


@pytest.mark.parametrize("kind", ["rsa", "dsa"])
async def test_an_hs_pubkey_identity_proves_itself_in_a_session(api: Api, kind):
    """type="HS_PUBKEY": the signature of the server's nonce and the cnonce with the private
    key whose public half (the Handle System's encoding) is the identity's value; the same
    identity administers over the native protocol (tests/test_native.py)."""
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = dsa.generate_private_key(key_size=2048)
    public = base64.b64encode(pubkeys.encode_public_key(key.public_key())).decode()
    holder = [{"index": 300, "type": "HS_PUBKEY", "data": {"format": "base64", "value": public}}]
    assert (await api.put("TEST/keyholder", holder, headers=ADMIN_AUTH))[0] == 201
    grant = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
        "handle": "TEST/keyholder", "index": 300, "permissions": "011111111111"}}}  # fmt: skip
    assert (await api.put("TEST/owned", [grant], headers=ADMIN_AUTH))[0] == 201
    identity = "300:TEST/keyholder"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for signer, status in ((other, 401), (key, 200)):
        session = await open_session(api, identity)
        cnonce = base64.b64encode(b"client nonce").decode()
        if isinstance(signer, rsa.RSAPrivateKey):
            signature = signer.sign(
                base64.b64decode(session["nonce"]) + b"client nonce",
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        else:
            signature = signer.sign(
                base64.b64decode(session["nonce"]) + b"client nonce", hashes.SHA256()
            )
        headers = handle_header(
            session["sessionId"], version="0", id=quote(identity, safe=""), type="HS_PUBKEY",
            alg="SHA256", cnonce=cnonce, signature=base64.b64encode(signature).decode(),
        )  # fmt: skip
        answer_status, body = await api._call("PUT", "/api/sessions/this", headers=headers)
        assert answer_status == status, body
    assert body["authenticated"] is True and body["id"] == identity
    proven = handle_header(body["sessionId"])
    status, _ = await api.put("TEST/owned?index=1", [url_value("https://k.org")], headers=proven)
    assert status in (200, 201)
