"""Property: whatever the record and whoever asks, no answer (the REST API, its error messages,
the listing, the resolver's redirects and pages) holds a value the caller may not read, and no
answer ever holds a secret key or its hash; no log line holds a private value, a secret or a
credential. Random records and callers (hypothesis), real HTTP, the cache in between."""

from __future__ import annotations

import itertools
import logging
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handle_server.auth.secrets import REDACTED

from .helpers import ADMIN_AUTH, Api, basic

ALICE = basic("300:TEST/USERS", "alice-secret")
BOB = basic("301:TEST/USERS", "bob-secret")
READ_VALUE = 1 << 10
SECRET_TEXTS = ("alice-secret", "bob-secret", "s3cret-value", "pbkdf2")

_names = itertools.count()


def _seckey(index: int, secret: str) -> dict[str, Any]:
    return {"index": index, "type": "HS_SECKEY", "data": secret, "permissions": "1100"}


values_st = st.lists(
    st.fixed_dictionaries(
        {
            "index": st.integers(1, 30),
            "type": st.sampled_from(["URL", "EMAIL", "SECRET", "HS_SECKEY", "X.y", "x"]),
            "data": st.sampled_from(["https://a.org", "mail@b.org", "s3cret-value", "plain"]),
            "permissions": st.sampled_from(
                ["".join(bits) for bits in itertools.product("01", repeat=4)]
            ),
        }
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda v: v["index"],
)
grant_st = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from([("TEST/USERS", 300), ("TEST/USERS", 0), ("TEST/GROUPS", 200)]),
        st.integers(0, 0x0FFF),
    ),
)
caller_st = st.sampled_from(["anonymous", "alice", "bob", "admin"])
query_st = st.fixed_dictionaries(
    {},
    optional={
        "publicOnly": st.sampled_from(["true", "false", ""]),
        "type": st.sampled_from(["SECRET", "X.", "HS_SECKEY", "URL"]),
        "index": st.integers(1, 30).map(str),
    },
)
HEADERS = {"anonymous": {}, "alice": ALICE, "bob": BOB, "admin": ADMIN_AUTH}


async def _setup(api: Api) -> None:
    if getattr(api, "people_ready", False):
        return
    await api.put("TEST/USERS", [_seckey(300, "alice-secret"), _seckey(301, "bob-secret")])
    group = {
        "index": 200,
        "type": "HS_VLIST",
        "data": {"format": "vlist", "value": [{"handle": "TEST/USERS", "index": 300}]},
    }
    await api.put("TEST/GROUPS", [group])
    api.people_ready = True  # type: ignore[attr-defined]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(values=values_st, grant=grant_st, calls=st.lists(st.tuples(caller_st, query_st), max_size=6))
async def test_no_answer_holds_a_value_the_caller_may_not_read(
    api: Api, caplog, values, grant, calls
):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="aiosqlite")  # as serve sets it: see cli.py
    logged_before = len(caplog.records)
    await _setup(api)
    handle = f"TEST/leak-{next(_names)}"
    # Each value's data names its index, so that any text can be traced to the value it shows.
    values = [{**v, "data": f"{v['data']}/v{v['index']}x"} for v in values]
    record = [dict(v) for v in values]
    alice_reads = bob_reads = False
    if grant is not None:
        (grant_handle, grant_index), perms = grant
        record.append(
            {
                "index": 100,
                "type": "HS_ADMIN",
                "data": {
                    "format": "admin",
                    "value": {
                        "handle": grant_handle,
                        "index": grant_index,
                        "permissions": format(perms, "012b"),
                    },
                },
            }
        )
        alice_reads = bool(perms & READ_VALUE)
        bob_reads = alice_reads and (grant_handle, grant_index) == ("TEST/USERS", 0)
    status, body = await api.put(handle, record)
    assert status == 201, body
    sent = {v["index"]: v for v in record}
    may_read_private = {"anonymous": False, "alice": alice_reads, "bob": bob_reads, "admin": True}
    private = [v["data"] for v in values if v["permissions"][2] == "0"]

    def hidden_from(caller: str) -> list[str]:
        """The data of the values ``caller`` may not read, whatever it asks."""
        return [
            v["data"]
            for v in values
            if v["permissions"][2] == "0"
            and not (may_read_private[caller] and v["permissions"][0] == "1")
        ]

    # Each call, then an anonymous one: a cached authenticated answer must not reach it.
    for caller, query in [*calls, ("anonymous", {})]:
        status, body = await api.get(handle, params=query, headers=HEADERS[caller])
        text = await api.last.text()
        assert not any(s in text for s in SECRET_TEXTS if s != "s3cret-value"), text
        assert not any(data in text for data in hidden_from(caller)), (caller, query, text)
        if status != 200:
            assert status in (401, 403), body
            continue
        public_only = query.get("publicOnly", "true" if caller == "anonymous" else "false") in (
            "true",
            "",
        )
        for value in body["values"]:
            perms = sent[value["index"]].get("permissions", "1110")
            public_read, admin_read = perms[2] == "1", perms[0] == "1"
            if not public_read:
                assert not public_only, (caller, query, value)
                assert may_read_private[caller] and admin_read, (caller, query, value)
            if value["type"] == "HS_SECKEY":
                assert value["data"]["value"] == REDACTED.decode()

    # Writes refused or in conflict: their error messages show nothing hidden either.
    hidden_first = sorted(sent, key=lambda i: sent[i].get("permissions", "1110")[2] == "1")
    for caller in ("anonymous", "alice", "bob"):
        for index in hidden_first[:2]:
            status, _ = await api.put(
                handle,
                [{"index": index, "type": "URL", "data": "https://other.org"}],
                params={"index": str(index), "overwrite": "false"},
                headers=HEADERS[caller],
            )
            text = await api.last.text()
            assert status >= 400 and not any(d in text for d in hidden_from(caller)), text

    # The listing names handles, never values.
    for caller in ("anonymous", "alice", "admin"):
        await api.list({"prefix": "TEST"}, headers=HEADERS[caller])
        text = await api.last.text()
        assert not any(v["data"] in text for v in values), text

    # The resolver answers everyone as the public: its redirect, page and JSON show public
    # values only.
    for path, headers in [
        (f"/{handle}", {}),
        (f"/{handle}?noredirect", {}),
        (f"/{handle}", {"Accept": "application/json"}),
        (f"/{handle}?noredirect", ALICE),
    ]:
        async with api.client.get(path, headers=headers, allow_redirects=False) as resp:
            text = await resp.text()
            shown = text + resp.headers.get("Location", "")
        assert not any(data in shown for data in private), (path, shown)

    # The log: no private value, secret or credential, whatever was asked.
    logged = "\n".join(r.getMessage() for r in caplog.records[logged_before:])
    credentials = [h["Authorization"].split()[1] for h in (ALICE, BOB, ADMIN_AUTH)]
    assert not any(s in logged for s in [*private, *SECRET_TEXTS, *credentials]), logged
