"""Page anchors (``storage.sqlite.anchors``) on their own: where a listing page may start, and
when that knowledge is dropped. Each row is a script of steps and what ``nearest`` answers
after it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.anchors import PageAnchors
from storage.rows import prefix_bounds

TEST = prefix_bounds("TEST")[0]
OTHER = prefix_bounds("OTHER")[0]

# Steps: ("remember", low, offset, key) with the generation read just before it;
#        ("read", low) reads a generation to remember with later ("late", low, offset, key);
#        ("changed", key) a handle came or went (None: any handle, or the news was lost).
CASES = [
    ("nothing remembered", [], TEST, 500, (0, None)),
    (
        "the anchor at or before",
        [("remember", TEST, 100, "k100"), ("remember", TEST, 300, "k300")],
        TEST,
        250,
        (100, "k100"),
    ),
    ("exactly at an anchor", [("remember", TEST, 300, "k300")], TEST, 300, (300, "k300")),
    ("prefixes apart", [("remember", OTHER, 100, "o100")], TEST, 500, (0, None)),
    (
        "a change forgets the prefix",
        [("remember", TEST, 100, "k100"), ("changed", "test/x")],
        TEST,
        500,
        (0, None),
    ),
    (
        "a change elsewhere keeps it",
        [("remember", TEST, 100, "k100"), ("changed", "other/x")],
        TEST,
        500,
        (100, "k100"),
    ),
    (
        "any change forgets all",
        [("remember", TEST, 100, "k100"), ("changed", None)],
        TEST,
        500,
        (0, None),
    ),
    (
        "read before a change, not remembered",
        [("read", TEST), ("changed", "test/x"), ("late", TEST, 100, "k100")],
        TEST,
        500,
        (0, None),
    ),
    # The race fixed last: a listing in flight for a prefix with no anchor yet, and a change
    # of any handle (an import, a pruned change log) before it remembers.
    (
        "read, then any change, on a prefix never seen",
        [("read", OTHER), ("changed", None), ("late", OTHER, 100, "o100")],
        OTHER,
        500,
        (0, None),
    ),
    (
        "read after the change: remembered",
        [("changed", None), ("read", TEST), ("late", TEST, 100, "k100")],
        TEST,
        500,
        (100, "k100"),
    ),
    (
        "the first anchor at an offset stays",
        [("remember", TEST, 100, "k100"), ("remember", TEST, 100, "other")],
        TEST,
        100,
        (100, "k100"),
    ),
]


@pytest.mark.parametrize(
    ("steps", "low", "offset", "nearest"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_nearest_anchor(steps, low, offset, nearest):
    anchors = PageAnchors()
    generations: dict[str, int] = {}
    for step in steps:
        if step[0] == "remember":
            _, where, at, key = step
            anchors.remember(where, at, key, anchors.generation(where))
        elif step[0] == "read":
            generations[step[1]] = anchors.generation(step[1])
        elif step[0] == "late":
            _, where, at, key = step
            anchors.remember(where, at, key, generations[where])
        else:
            anchors.changed(step[1])
    assert anchors.nearest(low, offset) == nearest


def test_a_prefix_keeps_a_bounded_number_of_anchors():
    anchors = PageAnchors()
    for n in range(PageAnchors._MAX_PER_PREFIX + 10):
        anchors.remember(TEST, n, f"k{n}", anchors.generation(TEST))
    assert anchors.nearest(TEST, 10**9)[0] < PageAnchors._MAX_PER_PREFIX + 10
    assert sum(1 for low, _ in anchors._keys if low == TEST) <= PageAnchors._MAX_PER_PREFIX


# The store's own writes: anchors move with the handles that came and went.

_KEYS = st.lists(st.integers(0, 60), min_size=1, max_size=40, unique=True)


@settings(max_examples=200, deadline=None)
@given(
    initial=_KEYS,
    remembered=st.lists(st.integers(1, 40), max_size=12),
    writes=st.lists(st.lists(st.integers(0, 60), max_size=6), max_size=6),
)
def test_anchors_move_with_the_handles_the_store_creates_and_deletes(initial, remembered, writes):
    """After any writes (each a group of keys toggled: created if absent, deleted if there),
    every anchor left says the truth: ``offset`` handles of the prefix have keys up to its
    key."""
    low = TEST
    key = lambda n: f"{low}{n:03d}"  # noqa: E731 - keys of the prefix, in order
    present = sorted(initial)
    anchors = PageAnchors()
    for offset in remembered:
        if offset <= len(present):
            anchors.remember(low, offset, key(present[offset - 1]), anchors.generation(low))
    # The model: the same anchors by key, their offsets counted afresh after each group (two
    # that land on one offset are one, the first by key; one at the prefix's start goes).
    model = sorted({key(present[o - 1]) for o in remembered if o <= len(present)})

    def settle(model: list[str]) -> list[str]:
        at: dict[int, str] = {}
        for anchored in model:
            counted = sum(1 for n in present if key(n) <= anchored)
            if counted > 0:
                at.setdefault(counted, anchored)
        return sorted(at.values())

    for group in writes:
        anchors.writing()
        moved = []
        for n in dict.fromkeys(group):
            if n in present:
                present.remove(n)
                moved.append((key(n), -1))
            else:
                present.append(n)
                moved.append((key(n), 1))
        present.sort()
        anchors.written(moved)
        anchors.nearest(low, 1)  # a listing between writes: the moves so far are made
        model = settle(model)
    kept = {o: anchors._keys[(low, o)] for o in anchors._offsets.get(low, [])}
    for offset, anchored in kept.items():
        assert sum(1 for n in present if key(n) <= anchored) == offset, (offset, anchored)
    assert kept == {sum(1 for n in present if key(n) <= k): k for k in settle(model)}


def test_nothing_is_remembered_while_a_write_is_under_way():
    k = lambda n: f"{TEST}k{n}"  # noqa: E731
    anchors = PageAnchors()
    anchors.remember(TEST, 100, k(100), anchors.generation(TEST))
    before = anchors.generation(TEST)  # a listing in flight when the write starts
    anchors.writing()
    during = anchors.generation(TEST)  # a listing starting while it is under way
    assert during is None
    anchors.remember(TEST, 200, k(200), during)
    anchors.written([(k("050"), 1)])
    anchors.remember(TEST, 300, k(300), before)  # it may have read the write, or not
    assert anchors.nearest(TEST, 10**6) == (101, k(100))  # moved, and nothing else kept
    anchors.remember(TEST, 300, k(300), anchors.generation(TEST))
    assert anchors.nearest(TEST, 10**6) == (300, k(300))


def test_a_failed_write_forgets_every_anchor():
    anchors = PageAnchors()
    anchors.remember(TEST, 100, "k100", anchors.generation(TEST))
    anchors.remember(OTHER, 100, "o100", anchors.generation(OTHER))
    anchors.writing()
    anchors.written(None)  # what it left is not known
    assert anchors.nearest(TEST, 500) == (0, None)
    assert anchors.nearest(OTHER, 500) == (0, None)
    assert anchors.generation(TEST) is not None


def test_a_change_heard_from_elsewhere_still_forgets_the_moves():
    anchors = PageAnchors()
    anchors.remember(TEST, 100, f"{TEST}k100", anchors.generation(TEST))
    anchors.writing()
    anchors.written([(f"{TEST}k050", 1)])
    anchors.changed(f"{TEST}x")  # another process's write: its kind is not known
    assert anchors.nearest(TEST, 500) == (0, None)
