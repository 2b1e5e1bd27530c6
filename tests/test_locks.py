"""KeyedLocks: turns by key, and many keys at once."""

from __future__ import annotations

import asyncio

import pytest

from handle_server.locks import KeyedLocks


async def test_holders_of_many_keys_wait_for_each_key_and_leave_nothing_behind():
    locks = KeyedLocks()
    order: list[str] = []

    async def one(key: str, name: str) -> None:
        async with locks(key):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    async def many(keys: list[str], name: str) -> None:
        async with locks.many(keys):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(one("b", "single"), many(["a", "b", "c"], "batch"), one("c", "late"))
    # The batch took a, waited for b's holder, and then for c's, which took c meanwhile: it
    # held no key it had not reached.
    assert order.index("batch in") > max(order.index("single out"), order.index("late out"))
    assert order[-1] == "batch out"
    await asyncio.gather(many(["a", "b"], "first"), one("b", "second"))
    assert order[-4:] == ["first in", "first out", "second in", "second out"]
    assert len(locks) == 0


async def test_a_holder_cancelled_while_waiting_gives_back_what_it_took():
    locks = KeyedLocks()
    async with locks("b"):
        waiting = asyncio.ensure_future(locks.many(["a", "b"]).__aenter__())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert len(locks) == 0
    async with locks.many(["a", "b"]):  # nothing is left held
        pass
    assert len(locks) == 0
