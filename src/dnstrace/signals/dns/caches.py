"""Small bounded caches of the DNS hot path: recent keys (``RecentMap``) and bytes -> text (``TextCache``)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """Bounded map of recent keys, cheaper than an LRU on the flood path: two plain dicts
    (generations). Keys go into ``young``; when it holds ``limit // 2`` keys, ``old`` is
    dropped (its entries counted in ``evicted``) and ``young`` becomes ``old``. At least the
    last ``limit // 2`` keys put are always kept, never more than ``limit``."""

    __slots__ = ("young", "old", "half", "evicted")

    def __init__(self, limit: int):
        self.young: dict[K, V] = {}
        self.old: dict[K, V] = {}
        self.half = max(1, limit // 2)
        self.evicted = 0

    def get(self, key: K) -> V | None:
        value = self.young.get(key)
        if value is None:
            value = self.old.get(key)
        return value

    def put(self, key: K, value: V) -> None:
        young = self.young
        young[key] = value
        if len(young) >= self.half:
            self.age()

    def age(self) -> None:
        self.evicted += len(self.old)
        self.old = self.young
        self.young = {}

    def pop(self, key: K) -> V | None:
        value = self.young.pop(key, None)
        old_value = self.old.pop(key, None)
        return old_value if value is None else value

    def update_values(self, update: Callable[[V], V]) -> None:
        """Replace every value by ``update(value)``, keys and generations unchanged."""
        self.young = {key: update(value) for key, value in self.young.items()}
        self.old = {key: update(value) for key, value in self.old.items()}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)


class TextCache(dict[bytes, str]):
    """Raw bytes -> text (addresses, comms), bounded: they repeat (nameservers, clients, programs).

    ``convert`` runs only on a miss; the cache empties itself when full."""

    def __init__(self, convert: Callable[[bytes], str], limit: int = 4096):
        super().__init__()
        self.convert = convert
        self.limit = limit

    def __missing__(self, raw: bytes) -> str:
        text = self.convert(raw)
        if len(self) >= self.limit:
            self.clear()
        self[raw] = text
        return text


def ipv4_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def ipv6_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def comm_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
