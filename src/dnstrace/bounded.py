"""The agent's one bounded cache: a dict that keeps its ``limit`` most recently used entries.

Every per-process, per-namespace and per-flow table in the agent is bounded this way so
memory does not grow with the node; what falls out is counted in ``evicted`` and shown
in the owner's stats.
"""

from __future__ import annotations

from collections import OrderedDict

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
