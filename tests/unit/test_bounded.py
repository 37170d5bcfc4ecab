"""The fair buffer: a total bound shared max-min between owners, oldest items first, drops counted."""

from __future__ import annotations

from dnstrace.bounded import FairBuffer


def test_the_largest_owner_pays_for_the_bound_with_its_oldest_items():
    buffer: FairBuffer[str, int] = FairBuffer(6)
    for i in range(10):
        buffer.append("flood", i)
    buffer.append("quiet", 100)
    buffer.append("quiet", 101)
    assert len(buffer) == 6 and buffer.evicted == 6
    assert list(buffer.by_owner["flood"]) == [6, 7, 8, 9] and list(buffer.by_owner["quiet"]) == [100, 101]
    assert sorted(buffer.items()) == [6, 7, 8, 9, 100, 101]


def test_ties_evict_the_owner_that_reached_the_size_first():
    buffer: FairBuffer[str, int] = FairBuffer(4)
    for owner in ("a", "b", "a", "b"):
        buffer.append(owner, len(buffer))
    buffer.append("c", 99)  # a and b hold 2 each; a got there first
    assert list(buffer.by_owner["a"]) == [2] and list(buffer.by_owner["b"]) == [1, 3]


def test_expire_drops_old_items_and_empty_owners_and_is_not_eviction():
    buffer: FairBuffer[str, int] = FairBuffer(100)
    for t in range(5):
        buffer.append("a", t)
    buffer.append("b", 1)
    buffer.expire(lambda t: t <= 2)
    assert list(buffer.by_owner["a"]) == [3, 4] and "b" not in buffer.by_owner
    assert len(buffer) == 2 and buffer.evicted == 0
    for t in range(5, 200):  # the sizes it files owners under stay right after expiry
        buffer.append("a", t)
    assert len(buffer) == 100 and list(buffer.by_owner["a"])[0] == 100
