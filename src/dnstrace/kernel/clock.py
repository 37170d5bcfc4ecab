"""Kernel timestamps to unix time, the same way for every signal, following wall-clock steps.

BPF programs stamp events with ``bpf_ktime_get_ns()``, which is CLOCK_MONOTONIC.
Events carry unix ns, so every source adds one offset (wall clock minus monotonic
clock) to the kernel's timestamps. The wall clock can be stepped (NTP, an operator,
a resumed VM) while the monotonic clock is not: a ``KernelClock`` re-reads the
offset on ``refresh()`` and adopts it when it moved by more than ``tolerance_ns``.
Below that it keeps the old offset, so reading jitter and NTP slewing do not make
the timestamps of two sources differ by a few nanoseconds from one drain to the next.

Sources refresh the clock at the start of each ``poll`` and ``tick``. All signals of
one agent share ``shared_clock()``: the gai and dns events a lookup join compares,
and the ``now_ns`` an expiry compares with event timestamps (the Runner's wall-clock
reading), are then converted with one offset, before a step and after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: offset changes smaller than this are reading jitter or NTP slewing, not steps
STEP_TOLERANCE_NS = 1_000_000


class KernelClock:
    """``bpf_ktime_get_ns()`` (CLOCK_MONOTONIC) <-> unix ns. The readers can be injected in tests."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns, mono_ns: Callable[[], int] = time.monotonic_ns,
                 tolerance_ns: int = STEP_TOLERANCE_NS):
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self.tolerance_ns = tolerance_ns
        self.offset_ns = self._read_offset()  # add to a kernel timestamp to get unix ns
        self.steps = 0  # wall-clock steps followed

    def _read_offset(self) -> int:
        return self._wall_ns() - self._mono_ns()

    def refresh(self) -> int:
        """Re-read the offset; returns the step followed in ns (0: none, the offset is unchanged)."""
        offset = self._read_offset()
        step = offset - self.offset_ns
        if abs(step) <= self.tolerance_ns:
            return 0
        self.offset_ns = offset
        self.steps += 1
        return step

    def to_unix_ns(self, ktime_ns: int) -> int:
        return ktime_ns + self.offset_ns

    def to_ktime_ns(self, unix_ns: int) -> int:
        return unix_ns - self.offset_ns

    def now_ktime_ns(self) -> int:
        """What ``bpf_ktime_get_ns()`` would return now."""
        return self._mono_ns()

    def now_unix_ns(self) -> int:
        """Now, on the same scale as converted kernel timestamps."""
        return self._mono_ns() + self.offset_ns


_shared: KernelClock | None = None


def shared_clock() -> KernelClock:
    """The clock every signal of this process converts with (made on first use)."""
    global _shared
    if _shared is None:
        _shared = KernelClock()
    return _shared
