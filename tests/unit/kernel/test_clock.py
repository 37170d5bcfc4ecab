"""KernelClock: kernel timestamps to unix ns, following wall-clock steps and ignoring jitter."""

from __future__ import annotations

from dnstrace.kernel.clock import STEP_TOLERANCE_NS, KernelClock, shared_clock


class FakeClocks:
    """A wall clock and a monotonic clock that tests advance and step by hand."""

    def __init__(self, wall_ns: int = 1_700_000_000_000_000_000, mono_ns: int = 5_000_000_000):
        self.wall = wall_ns
        self.mono = mono_ns

    def advance(self, ns: int) -> None:
        self.wall += ns
        self.mono += ns

    def step_wall(self, ns: int) -> None:
        self.wall += ns

    def clock(self) -> KernelClock:
        return KernelClock(wall_ns=lambda: self.wall, mono_ns=lambda: self.mono)


def test_converts_kernel_timestamps_with_the_offset_read_at_creation():
    clocks = FakeClocks()
    clock = clocks.clock()
    assert clock.offset_ns == clocks.wall - clocks.mono
    assert clock.to_unix_ns(clocks.mono) == clocks.wall
    assert clock.to_ktime_ns(clocks.wall + 7) == clocks.mono + 7
    assert clock.now_ktime_ns() == clocks.mono
    assert clock.now_unix_ns() == clocks.wall


def test_refresh_follows_a_wall_clock_step_both_ways():
    clocks = FakeClocks()
    clock = clocks.clock()
    clocks.advance(3_000_000_000)
    assert clock.refresh() == 0  # both clocks moved together: no step
    clocks.step_wall(3600 * 10**9)
    assert clock.refresh() == 3600 * 10**9
    assert clock.now_unix_ns() == clocks.wall
    assert clock.to_unix_ns(clocks.mono - 10) == clocks.wall - 10
    clocks.step_wall(-7200 * 10**9)
    assert clock.refresh() == -7200 * 10**9
    assert clock.now_unix_ns() == clocks.wall
    assert clock.steps == 2


def test_refresh_ignores_jitter_and_slewing_below_the_tolerance():
    clocks = FakeClocks()
    clock = clocks.clock()
    before = clock.offset_ns
    clocks.step_wall(STEP_TOLERANCE_NS)
    assert clock.refresh() == 0
    assert clock.offset_ns == before
    assert clock.steps == 0
    clocks.step_wall(1)  # the drift adds up: once past the tolerance the offset catches up
    assert clock.refresh() == STEP_TOLERANCE_NS + 1
    assert clock.offset_ns == clocks.wall - clocks.mono


def test_every_signal_shares_one_clock():
    assert shared_clock() is shared_clock()
