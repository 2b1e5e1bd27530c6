"""Property: whatever the record and whoever asks, no answer holds a value the caller may not
read, and no answer ever holds a secret key or its hash. Random records and callers
(hypothesis), real HTTP, the cache in between."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handle_server.seckey import REDACTED, hash_secret

from .conftest import ADMIN_AUTH, Api, basic

ALICE = basic("300:TEST/USERS", "alice-secret")
BOB = basic("301:TEST/USERS", "bob-secret")
READ_VALUE = 1 << 10
SECRET_TEXTS = ("alice-secret", "bob-secret", "s3cret-value", "pbkdf2")

_names = itertools.count()


def _seckey(index: int, secret: str) -> dict[str, Any]:
    hashed = hash_secret(secret.encode(), iterations=1000).decode()
    return {"index": index, "type": "HS_SECKEY", "data": hashed, "permissions": "1100"}


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
async def test_no_answer_holds_a_value_the_caller_may_not_read(api: Api, values, grant, calls):
    await _setup(api)
    handle = f"TEST/leak-{next(_names)}"
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
    # Each call, then an anonymous one: a cached authenticated answer must not reach it.
    for caller, query in [*calls, ("anonymous", {})]:
        status, body = await api.get(handle, params=query, headers=HEADERS[caller])
        text = await api.last.text()
        assert not any(s in text for s in SECRET_TEXTS if s != "s3cret-value"), text
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
