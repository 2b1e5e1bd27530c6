"""The native interfaces' per-address token buckets (``native/rate.py``), on a fake clock."""

from __future__ import annotations

from handle_server.native.rate import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_rate_a_second_and_no_more():
    clock = Clock()
    limit = RateLimit(5, clock)
    assert [limit.allows("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limit.allows("b")  # another key has a bucket of its own
    clock.now += 0.2  # one token back
    assert limit.allows("a") and not limit.allows("a")
    clock.now += 60  # a long quiet refills the bucket, never past its size
    assert [limit.allows("a") for _ in range(6)] == [True] * 5 + [False]


def test_refused_requests_do_not_spend_tokens():
    clock = Clock()
    limit = RateLimit(2, clock)
    assert limit.allows("a") and limit.allows("a")
    for _ in range(100):
        assert not limit.allows("a")
    clock.now += 0.5  # one token, however many were refused meanwhile
    assert limit.allows("a") and not limit.allows("a")


def test_the_buckets_are_bounded_and_forgetting_frees_no_busy_key():
    clock = Clock()
    limit = RateLimit(3, clock, keys=100)
    for _ in range(3):
        assert limit.allows("busy")
    assert not limit.allows("busy")
    clock.now += 1  # "busy" has a full bucket again, as quiet keys have
    assert limit.allows("busy") and limit.allows("busy")
    for n in range(99):
        limit.allows(f"quiet-{n}")
    assert len(limit._buckets) == 100
    clock.now += 1.5
    assert limit.allows("busy")  # not forgotten: its bucket keeps its one token spent
    limit.allows("newcomer")  # at the bound: the full buckets (the quiet keys') go
    assert set(limit._buckets) == {"busy", "newcomer"}
    assert [limit.allows("busy") for _ in range(3)] == [True, True, False]  # its 2 kept
    # A flood of new keys within one second: nothing is full, the first-seen half goes.
    for n in range(300):
        limit.allows(f"flood-{n}")
        assert len(limit._buckets) <= 100
    assert "flood-299" in limit._buckets
