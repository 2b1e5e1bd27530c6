"""Page anchors (``storage.sqlite.anchors``) on their own: where a listing page may start, and
when that knowledge is dropped. Each row is a script of steps and what ``nearest`` answers
after it."""

from __future__ import annotations

import pytest

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
