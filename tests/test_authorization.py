"""Who may do what: the permission matrix, groups, per-value rights, the reference's special
cases. Identities live on TEST/USERS (HS_SECKEY values), groups on TEST/GROUPS (HS_VLIST)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from handle_server.encoding import AdminPermission as P

from .helpers import (
    ADMIN_AUTH,
    ALL,
    Api,
    admin,
    basic,
    seckey,
    url_value,
    vlist,
)

ALICE = basic("300:TEST/USERS", "alice-secret")
BOB = basic("301:TEST/USERS", "bob-secret")


@pytest.fixture
async def people(api: Api) -> Api:
    assert (await api.put("TEST/USERS", [seckey(300, "alice-secret"), seckey(301, "bob-secret")]))[
        0
    ] == 201
    groups = [
        vlist(200, ("TEST/USERS", 300)),  # alice's group
        vlist(201, ("TEST/GROUPS", 200)),  # a group holding that group
        vlist(202, ("TEST/GROUPS", 203), ("TEST/USERS", 301)),  # a cycle 202 -> 203 -> 202,
        vlist(203, ("TEST/GROUPS", 202)),  # with bob in it, not alice
    ]
    assert (await api.put("TEST/GROUPS", groups))[0] == 201
    return api


# The grant an HS_ADMIN value names: alice herself, her group, or a group holding her group.
GRANTS = {
    "direct": ("TEST/USERS", 300),
    "vlist": ("TEST/GROUPS", 200),
    "nested": ("TEST/GROUPS", 201),
}


@dataclass(frozen=True)
class Op:
    name: str
    needs: P
    on_prefix: bool  # granted on the prefix handle 0.NA/TEST, not on the handle itself
    method: str
    path: str  # {h}: the case's handle
    params: dict[str, str] | None
    body: Any
    ok: int


NEW_URL = [url_value("https://n.org")]
CHANGED_URL = [url_value("https://changed.org")]
VALUE_4 = [{"index": 4, "type": "X", "data": "4"}]
ADMIN_102 = [admin("TEST/OTHER", 300, at=102)]
ADMIN_101 = [admin("TEST/OTHER", 301, at=101)]
PRIVATE = {"publicOnly": "false"}
LIST_TEST = {"prefix": "TEST"}


def at(index: int) -> dict[str, str]:
    return {"index": str(index)}


# fmt: off
OPERATIONS = [
    #  operation        needs            prefix method    path     params       body         ok
    Op("create handle", P.ADD_HANDLE,    True,  "PUT",    "{h}-n", None,        NEW_URL,     201),
    Op("delete handle", P.DELETE_HANDLE, False, "DELETE", "{h}",   None,        None,        200),
    Op("add value",     P.ADD_VALUE,     False, "PUT",    "{h}",   at(4),       VALUE_4,     201),
    Op("modify value",  P.MODIFY_VALUE,  False, "PUT",    "{h}",   at(1),       CHANGED_URL, 200),
    Op("remove value",  P.REMOVE_VALUE,  False, "DELETE", "{h}",   at(2),       None,        200),
    Op("add admin",     P.ADD_ADMIN,     False, "PUT",    "{h}",   at(102),     ADMIN_102,   201),
    Op("modify admin",  P.MODIFY_ADMIN,  False, "PUT",    "{h}",   at(101),     ADMIN_101,   200),
    Op("remove admin",  P.REMOVE_ADMIN,  False, "DELETE", "{h}",   at(101),     None,        200),
    Op("read value",    P.READ_VALUE,    False, "GET",    "{h}",   PRIVATE,     None,        200),
    Op("list handles",  P.LIST_HANDLES,  True,  "GET",    "",      LIST_TEST,   None,        200),
]
# fmt: on

#: Without the right: the reference's authenticateUser answer, INVALID_ADMIN.
REFUSED = (403, 400)


async def _call(api: Api, op: Op, handle: str, headers: dict[str, str]) -> tuple[int, Any]:
    path = "/api/handles/" + op.path.format(h=handle) if op.path else "/api/handles"
    kwargs: dict[str, Any] = {"params": op.params, "headers": dict(headers)}
    if op.body is not None:
        kwargs["json"] = op.body
    return await api._call(op.method, path, **kwargs)


async def _prepare(api: Api, handle: str, op: Op, grant: tuple[str, int], perms: str) -> None:
    record = [
        url_value("https://a.org"),
        {"index": 2, "type": "X", "data": "two"},
        {"index": 3, "type": "SECRET", "data": "s", "permissions": "1100"},
        admin("TEST/OTHER", 300, at=101),
    ]
    if op.on_prefix:
        prefix_grant = admin(*grant, perms=perms, at=101)
        status, _ = await api.put("0.NA/TEST", [prefix_grant], params={"index": "101"})
        assert status in (200, 201)
    else:
        record.append(admin(*grant, perms=perms))
    assert (await api.put(handle, record))[0] == 201


async def test_permission_matrix(people: Api):
    """Each operation x right present/absent x grant direct/through a group/nested groups.
    A wrong answer is reported as a row of the matrix."""
    wrong = []
    rows = 0
    for n, op in enumerate(OPERATIONS):
        for grant_name, grant in GRANTS.items():
            for present in (True, False):
                handle = f"TEST/case-{n}-{grant_name}-{present}"
                perms = ALL if present else (P.all() & ~op.needs).to_string()
                await _prepare(people, handle, op, grant, perms)
                status, body = await _call(people, op, handle, ALICE)
                got = (status, body.get("responseCode") if isinstance(body, dict) else None)
                expected = (op.ok, 1) if present else REFUSED
                if got != expected:
                    wrong.append(
                        f"{op.name:14} {grant_name:7} right={present!s:5} {got} != {expected}"
                    )
                rows += 1
    assert rows == len(OPERATIONS) * len(GRANTS) * 2 == 60
    assert not wrong, "\n" + "\n".join(wrong)


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
async def test_no_credentials_and_strangers(people: Api, op: Op):
    """No credentials: 401/402. Wrong secret: 401/403. An identity no HS_ADMIN names, also
    through a cycle of groups: 403/400."""
    handle = f"TEST/strangers-{op.name.replace(' ', '-')}"
    await _prepare(people, handle, op, ("TEST/GROUPS", 202), ALL)  # names bob via a cycle
    # alice is in no group the grant reaches: refused, and the cycle does not hang the server
    assert (await _call(people, op, handle, ALICE))[0] == 403
    status, body = await _call(people, op, handle, {})
    assert (status, body["responseCode"]) == (401, 402)
    status, body = await _call(people, op, handle, basic("300:TEST/USERS", "wrong"))
    assert (status, body["responseCode"]) == (401, 403)
    # bob is in the cycle: granted
    status, body = await _call(people, op, handle, BOB)
    assert (status, body["responseCode"]) == (op.ok, 1), body


async def test_a_reference_with_index_0_names_every_index_of_its_handle(people: Api):
    await people.put("TEST/zero", [url_value("https://a.org"), admin("TEST/USERS", 0)])
    for who in (ALICE, BOB):
        status, _ = await people.put(
            "TEST/zero",
            [{"index": 5, "type": "X", "data": "x"}],
            params={"index": "5"},
            headers=who,
        )
        assert status in (200, 201)
    # ... but a group reference with index 0 is not followed (as the reference).
    await people.put("TEST/zero2", [url_value("https://a.org"), admin("TEST/GROUPS", 0)])
    status, body = await people.put(
        "TEST/zero2", [{"index": 5, "type": "X", "data": "x"}], params={"index": "5"}, headers=ALICE
    )
    assert (status, body["responseCode"]) == REFUSED


async def test_a_create_without_hs_admin_leaves_the_handle_to_the_prefix_admins(people: Api):
    """As the reference: nothing is added for the creator, so only HS_ADMIN holders (none here)
    and the configured prefix admins may change it afterwards."""
    await people.put("0.NA/TEST", [admin("TEST/USERS", 300, at=101)], params={"index": "101"})
    assert (await people.put("TEST/orphan", [url_value("https://a.org")], headers=ALICE))[0] == 201
    values = await people.values("TEST/orphan")
    assert [v["type"] for v in values] == ["URL"]
    status, body = await people.delete("TEST/orphan", headers=ALICE)
    assert (status, body["responseCode"]) == REFUSED
    assert (await people.delete("TEST/orphan", headers=ADMIN_AUTH))[0] == 200


async def test_read_only_values_are_refused_to_everyone_but_may_be_removed(people: Api):
    record = [
        {"index": 1, "type": "URL", "data": "https://a.org", "permissions": "1010"},
        admin("TEST/USERS", 300),
    ]
    await people.put("TEST/ro", record)
    for who in (ALICE, ADMIN_AUTH):
        status, body = await people.put(
            "TEST/ro", [url_value("https://b.org")], params={"index": "1"}, headers=who
        )
        assert (status, body["responseCode"]) == (403, 401) and "read-only" in body["message"]
        status, body = await people.put("TEST/ro", [url_value("https://b.org")], headers=who)
        assert (status, body["responseCode"]) == (403, 401)
    # Sent again unchanged, it is no change at all.
    assert (await people.put("TEST/ro", record, headers=ALICE))[0] == 200
    # The reference lets REMOVE_VALUE take a read-only value away.
    assert (await people.delete("TEST/ro", params={"index": "1"}, headers=ALICE))[0] == 200


async def test_public_write_values_need_an_identity_but_no_modify_right(people: Api):
    record = [
        {"index": 1, "type": "COUNTER", "data": "1", "permissions": "1111"},
        {"index": 2, "type": "X", "data": "x"},
        admin("TEST/USERS", 300),
    ]
    await people.put("TEST/pw", record)
    change = [{"index": 1, "type": "COUNTER", "data": "2", "permissions": "1111"}]
    status, body = await people.put("TEST/pw", change, params={"index": "1"}, headers={})
    assert (status, body["responseCode"]) == (401, 402)
    status, _ = await people.put("TEST/pw", change, params={"index": "1"}, headers=BOB)
    assert status == 200
    status, body = await people.put(
        "TEST/pw", [{"index": 2, "type": "X", "data": "y"}], params={"index": "2"}, headers=BOB
    )
    assert (status, body["responseCode"]) == REFUSED


@pytest.mark.parametrize(
    ("perms", "allowed"),
    [
        (P.MODIFY_VALUE | P.REMOVE_VALUE | P.ADD_VALUE, True),  # exactly what the change needs
        (P.ADD_ADMIN, True),  # or ADD_ADMIN
        (P.DELETE_HANDLE, True),  # or DELETE_HANDLE (doCreateHandle)
        (P.MODIFY_VALUE | P.ADD_VALUE, False),  # a value is removed: REMOVE_VALUE is missing
        (P.all() & ~(P.ADD_ADMIN | P.DELETE_HANDLE | P.REMOVE_VALUE), False),
    ],
)
async def test_replacing_a_whole_record(people: Api, perms: P, allowed: bool):
    await people.put(
        "TEST/whole",
        [
            url_value("https://a.org"),
            {"index": 2, "type": "X", "data": "x"},
            admin("TEST/USERS", 300, perms=perms.to_string()),
        ],
    )
    new = [url_value("https://b.org"), {"index": 3, "type": "Y", "data": "y"}]
    new.append(admin("TEST/USERS", 300, perms=perms.to_string()))
    status, body = await people.put("TEST/whole", new, headers=ALICE)
    assert (status, body["responseCode"]) == ((200, 1) if allowed else REFUSED)


@pytest.mark.parametrize(
    ("perms", "allowed"),
    [
        (P.REMOVE_ADMIN | P.MODIFY_VALUE, True),
        (P.REMOVE_ADMIN, False),
        (P.MODIFY_VALUE | P.MODIFY_ADMIN, False),
    ],
)
async def test_turning_an_admin_value_into_another_type(people: Api, perms: P, allowed: bool):
    await people.put(
        "TEST/turn",
        [admin("TEST/USERS", 300, perms=perms.to_string()), admin("TEST/OTHER", 1, at=101)],
    )
    status, body = await people.put(
        "TEST/turn",
        [{"index": 101, "type": "X", "data": "x"}],
        params={"index": "101"},
        headers=ALICE,
    )
    assert (status, body["responseCode"]) == ((200, 1) if allowed else REFUSED)


async def test_user_identities_are_created_granted_and_revoked_through_the_api(api: Api):
    """The walk-through of docs/api.md: an operator creates an identity, grants it rights on the
    prefix through the admin group, and revokes them."""
    user = basic("300:TEST/USER01", "user-pass")
    secret = {"index": 300, "type": "HS_SECKEY", "data": "user-pass", "permissions": "1100"}
    assert (await api.put("TEST/USER01", [secret]))[0] == 201
    # Without a grant: authenticated, but refused.
    status, body = await api.put("TEST/made-by-user", [url_value("https://u.org")], headers=user)
    assert (status, body["responseCode"]) == REFUSED
    # Grant: a group on the prefix handle, named by an HS_ADMIN there with ADD_HANDLE and more.
    await api.put("0.NA/TEST", [vlist(201, ("TEST/USER01", 300))], params={"index": "201"})
    await api.put("0.NA/TEST", [admin("0.NA/TEST", 201, at=101)], params={"index": "101"})
    made = [url_value("https://u.org"), admin("0.NA/TEST", 201)]
    assert (await api.put("TEST/made-by-user", made, headers=user))[0] == 201
    assert (await api.put("TEST/made-by-user", made, headers=user))[0] == 200
    # Revoke: take the identity out of the group.
    await api.put("0.NA/TEST", [vlist(201)], params={"index": "201"})
    changed = [url_value("https://changed.org"), admin("0.NA/TEST", 201)]
    status, body = await api.put("TEST/made-by-user", changed, headers=user)
    assert (status, body["responseCode"]) == REFUSED
    status, body = await api.put("TEST/another", [url_value("https://u.org")], headers=user)
    assert (status, body["responseCode"]) == REFUSED


async def test_nothing_is_told_without_credentials(people: Api):
    """Unlike the reference (409 before any authentication), an anonymous overwrite=false of
    an existing handle is a challenge: credentials come first."""
    await people.put("TEST/exists", [url_value("https://a.org")])
    status, body = await people.put(
        "TEST/exists", [url_value("https://b.org")], params={"overwrite": "false"}, headers={}
    )
    assert (status, body["responseCode"]) == (401, 402)


# -- permission before existence: a refusal never tells what a record holds ---------------------


@pytest.fixture
async def two_records(people: Api) -> Api:
    """TEST/with holds a private EMAIL at 2 and a value at 9; TEST/without holds neither.
    Bob holds every right on neither; alice holds every right on both."""
    common = [url_value("https://a.org"), admin("TEST/USERS", 300)]
    private = {"index": 2, "type": "EMAIL", "data": "x@a.org", "permissions": "1100"}
    nine = {"index": 9, "type": "NOTE", "data": "nine"}
    assert (await people.put("TEST/with", [*common, private, nine]))[0] == 201
    assert (await people.put("TEST/without", common))[0] == 201
    return people


LEAK_PROBES = [
    # (what, method, query, body, caller): the answer must not depend on the record
    ("anonymous-private-read", "GET", "publicOnly=false&type=EMAIL", None, None),
    ("anonymous-private-index", "GET", "publicOnly=false&index=2", None, None),
    ("bob-private-read", "GET", "publicOnly=false&type=EMAIL", None, BOB),
    ("bob-default-read", "GET", "type=EMAIL", None, BOB),
    ("bob-removes-9", "DELETE", "index=9", None, BOB),
    ("bob-adds-at-2", "PUT", "index=2&overwrite=false", [url_value("https://b.org", 2)], BOB),
    ("bob-adds-at-9", "PUT", "index=9&overwrite=false", [url_value("https://b.org", 9)], BOB),
]


@pytest.mark.parametrize(
    ("method", "query", "body", "caller"),
    [p[1:] for p in LEAK_PROBES],
    ids=[p[0] for p in LEAK_PROBES],
)
async def test_a_refusal_is_the_same_whether_or_not_the_values_exist(
    two_records: Api, method, query, body, caller
):
    answers = []
    for handle in ("TEST/with", "TEST/without"):
        before = await two_records.values(handle)
        kwargs: dict[str, Any] = {"headers": caller}
        if body is not None:
            kwargs["json"] = body
        async with two_records.client.request(
            method, f"/api/handles/{handle}?{query}", **kwargs
        ) as resp:
            got = await resp.json()
        got.pop("handle")
        if "message" in got:
            got["message"] = got["message"].replace(handle, "<handle>")
        answers.append((resp.status, got))
        assert await two_records.values(handle) == before
    (status, answer), (other_status, other) = answers
    assert status == other_status and answer == other, answers
    assert status in (200, 401, 403)
    if status == 200:
        assert answer.get("values", []) == []  # bob reads no private value, present or not


async def test_holders_are_told_what_is_missing_or_present(two_records: Api):
    alice = ALICE
    status, body = await two_records.delete("TEST/without", params={"index": "9"}, headers=alice)
    assert (status, body["responseCode"]) == (400, 200)
    status, body = await two_records.put(
        "TEST/with",
        [url_value("https://b.org", 9)],
        params={"index": "9", "overwrite": "false"},
        headers=alice,
    )
    assert (status, body["responseCode"]) == (409, 201)
    status, body = await two_records.get(
        "TEST/with", params={"publicOnly": "false", "type": "EMAIL"}, headers=alice
    )
    assert status == 200 and [v["index"] for v in body["values"]] == [2]
