"""The agent's bounded containers: a dict that keeps its ``limit`` most recently used entries,
and a buffer whose bound is shared fairly between the owners of its items.

Every per-process, per-namespace and per-flow table in the agent is bounded this way so
memory does not grow with the node; what falls out is counted in ``evicted`` and shown
in the owner's stats.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")

_MISSING = object()


class BoundedDict(OrderedDict):
    """Insertion-ordered dict that drops its least recently put/touched entries past ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.evicted = 0

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
            self.evicted += 1

    def touch(self, key, default=None):
        """``get`` that also marks the entry as recently used."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return default
        self.move_to_end(key)
        return value


class FairBuffer(Generic[K, T]):
    """Items by owner, oldest first, with a total bound shared fairly between owners (max-min).

    When the bound is reached, the oldest item of the owner holding the *most* items goes:
    an owner flooding the buffer loses its own history and nobody else's, so the few items
    another owner has stay. The largest owner is found in O(1): owners are filed by how
    many items they hold. ``evicted`` counts the items dropped because of the bound.
    """

    def __init__(self, max_items: int):
        self.max_items = max_items
        self.by_owner: dict[K, deque[T]] = {}
        # items held -> owners holding that many, in the order they got there (ties: the longest there loses)
        self._by_size: defaultdict[int, dict[K, None]] = defaultdict(dict)
        self._largest = 0
        self.total = 0
        self.evicted = 0  # items dropped because of the bound (not by ``expire``)

    def _resize(self, owner: K, old: int, new: int) -> None:
        """File ``owner`` under its new size (callers keep ``_largest`` right)."""
        if old:
            holders = self._by_size[old]
            holders.pop(owner, None)
            if not holders:
                del self._by_size[old]
        if new:
            self._by_size[new][owner] = None

    def append(self, owner: K, item: T) -> None:
        queue = self.by_owner.get(owner)
        by_size = self._by_size
        if queue is None:
            queue = self.by_owner[owner] = deque()
        else:  # inline _resize: this runs for every item of a flood
            holders = by_size[len(queue)]
            del holders[owner]
            if not holders:
                del by_size[len(queue)]
        queue.append(item)
        size = len(queue)
        by_size[size][owner] = None
        if size > self._largest:
            self._largest = size
        self.total += 1
        if self.total > self.max_items:
            self._evict_from_largest()

    def _evict_from_largest(self) -> None:
        largest = self._largest
        by_size = self._by_size
        holders = by_size[largest]
        victim = next(iter(holders))
        queue = self.by_owner[victim]
        queue.popleft()
        self.total -= 1
        self.evicted += 1
        del holders[victim]
        if not holders:
            del by_size[largest]
            self._largest = largest - 1  # the victim itself now holds largest - 1 (or nothing was left)
        if queue:
            by_size[largest - 1][victim] = None
        else:
            del self.by_owner[victim]

    def expire(self, is_old: Callable[[T], bool]) -> None:
        """Forget each owner's oldest items while ``is_old`` says so (items are in time order per owner)."""
        for owner in list(self.by_owner):
            queue = self.by_owner[owner]
            before = len(queue)
            while queue and is_old(queue[0]):
                queue.popleft()
            if len(queue) != before:
                self.total -= before - len(queue)
                self._resize(owner, before, len(queue))
                if not queue:
                    del self.by_owner[owner]
        self._largest = max(self._by_size, default=0)

    def items(self) -> list[T]:
        """Every item held, owner by owner."""
        out: list[T] = []
        for queue in self.by_owner.values():
            out.extend(queue)
        return out

    def __len__(self) -> int:
        return self.total
