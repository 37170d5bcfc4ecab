"""KernelClock: kernel timestamps to unix ns, following wall-clock steps and ignoring jitter.

The last tests step the wall clock under the signals: every source converts kernel timestamps
with the shared clock and refreshes it at each poll, the Runner hands ``tick``/``flush`` the
wall clock, so after a step the gai<->dns lookup join and the unanswered-query expiry agree.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dnstrace.enrich.resolvconf import parse
from dnstrace.kernel.clock import STEP_TOLERANCE_NS, KernelClock, shared_clock
from dnstrace.lab.dns_servers import build_message
from dnstrace.signals.dns.abi import DIR_EGRESS, DIR_INGRESS, PROTO_UDP
from dnstrace.signals.dns.tracker import DnsTracker, Packet
from dnstrace.signals.gai.source import GaiDecoder, GaiSource
from dnstrace.signals.lookups.source import GAI_GRACE_NS, LookupJoiner, LookupsSource

MS = 1_000_000
S = 1_000_000_000
HOUR = 3600 * S
PID = 4711


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


# --- a wall-clock step under the signals -------------------------------------------------------


class FakeRing:
    """Stands in for GaiSource's ring buffer reader: hands out the records given to it."""

    def __init__(self):
        self.records: list[tuple] = []

    def drain_sized(self, _layouts):
        records, self.records = self.records, []
        return records


def _gai_source(clock: KernelClock) -> GaiSource:
    """A GaiSource whose kernel parts are replaced: its own poll() converts the timestamps."""
    source = GaiSource(clock=clock)
    source.reader = FakeRing()
    source.libcs = SimpleNamespace(paths_by_id={})
    source.decoder = GaiDecoder()
    source.next_rescan_ns = 2**63  # no libc rescan from tick
    return source


def _gai_record(start_ktime: int, latency_ns: int, name: bytes) -> tuple:
    return (start_ktime, latency_ns, PID << 32 | PID, 0, 0, 0, len(name), b"app", name)


def _dns_packet(clock: KernelClock, ktime: int, msg_id: int, qtype: int, egress: bool = True) -> Packet:
    """A DNS packet as the dns source hands it to its tracker: the kernel timestamp through the clock."""
    if egress:
        data = build_message(msg_id, 0x0100, "web.example.test", qtype)
        ends = dict(direction=DIR_EGRESS, saddr="10.53.0.1", daddr="10.53.0.2", sport=40000, dport=53)
    else:
        data = build_message(msg_id, 0x8180, "web.example.test", qtype, answers=((1, bytes([10, 1, 2, 3])),))
        ends = dict(direction=DIR_INGRESS, saddr="10.53.0.2", daddr="10.53.0.1", sport=53, dport=40000)
    return Packet(ts=clock.to_unix_ns(ktime), cookie=1, pid=PID, tid=PID, comm="app", family=4, proto=PROTO_UDP,
                  payload_len=len(data), seq=0, data=data, **ends)


def _tracker() -> DnsTracker:
    conf = parse("nameserver 10.53.0.2\noptions timeout:2\n")
    return DnsTracker(resolv_for_pid=lambda pid: conf)


@pytest.mark.parametrize("step_ns", [HOUR, -HOUR], ids=["forward", "backward"])
def test_after_a_wall_clock_step_joins_and_expiry_agree(step_ns):
    clocks = FakeClocks()
    clock = clocks.clock()
    gai = _gai_source(clock)
    tracker, joiner = _tracker(), LookupJoiner()
    clocks.advance(10 * S)
    clocks.step_wall(step_ns)  # NTP (or an operator) steps the wall clock; CLOCK_MONOTONIC does not move
    assert gai.poll() == [] and clock.steps == 1  # a source's poll refreshes the shared clock first

    # A getaddrinfo call of 200 ms: an A query answered after 3 ms, an AAAA query never answered.
    call_start = clocks.mono
    gai.reader.records.append(_gai_record(call_start, 200 * MS, b"web.example.test"))
    assert tracker.packet(_dns_packet(clock, call_start + 1 * MS, 7, 1)) == []
    assert tracker.packet(_dns_packet(clock, call_start + 2 * MS, 8, 28)) == []
    clocks.advance(4 * MS)
    [answered] = tracker.packet(_dns_packet(clock, call_start + 4 * MS, 7, 1, egress=False))
    clocks.advance(200 * MS)
    [call] = gai.poll()
    assert call["ts"] == clocks.wall - 204 * MS  # unix time as the wall clock reads after the step

    # The Runner's now_ns is the wall clock: the join waits out its grace period, then claims both queries.
    for event in (call, answered):
        joiner.add(event, clocks.wall)
    assert joiner.flush(clocks.wall, tracker.pending()) == []
    clocks.advance(GAI_GRACE_NS)
    [lookup] = joiner.flush(clocks.wall, tracker.pending())
    assert [(a["qtype"], a["answered"]) for a in lookup["attempts"]] == [("A", True), ("AAAA", False)]

    # The unanswered AAAA expires after its 2 s resolver timeout on the Runner's wall clock, not before.
    sent_at_wall = clocks.wall - (GAI_GRACE_NS + 202 * MS)
    assert tracker.expire(sent_at_wall + 2 * S - 1) == []
    [expired] = tracker.expire(sent_at_wall + 2 * S)
    assert (expired["qtype"], expired["answered"], expired["timeout_ns"]) == ("AAAA", False, 2 * S)


def test_an_offset_read_once_disagrees_with_the_wall_clock_after_a_step():
    """What refreshing prevents: a query converted with the offset of before the step looks an hour old."""
    clocks = FakeClocks()
    stale = clocks.clock()  # read once at start, never refreshed
    tracker = _tracker()
    clocks.step_wall(HOUR)
    tracker.packet(_dns_packet(stale, clocks.mono, 9, 1))
    [expired] = tracker.expire(clocks.wall)  # sent just now
    assert expired["answered"] is False


class FakeDnsSource:
    """The dns source's face towards LookupsSource, over a real tracker fed clock-converted packets."""

    def __init__(self):
        self.tracker = _tracker()
        self.events: list[dict] = []

    def packet(self, packet: Packet) -> None:
        self.events.extend(self.tracker.packet(packet))

    def poll(self) -> list[dict]:
        events, self.events = self.events, []
        return events

    def tick(self, now_ns: int) -> list[dict]:
        return self.poll() + self.tracker.expire(now_ns)

    def pending(self) -> list[dict]:
        return self.tracker.pending()


@pytest.mark.parametrize("step_ns", [HOUR, -HOUR], ids=["forward", "backward"])
def test_a_step_while_a_lookup_waits_moves_its_wait_to_the_new_clock(step_ns):
    """A call polled before the step, joined after it: still after its grace period, not an hour off."""
    clocks = FakeClocks()
    clock = clocks.clock()
    gai, dns = _gai_source(clock), FakeDnsSource()
    lookups = LookupsSource(dns, [gai], clock=clock)
    lookups.active_gai = [gai]
    call_start = clocks.mono
    dns.packet(_dns_packet(clock, call_start + 1 * MS, 7, 1))
    dns.packet(_dns_packet(clock, call_start + 3 * MS, 7, 1, egress=False))
    gai.reader.records.append(_gai_record(call_start, 5 * MS, b"web.example.test"))
    clocks.advance(5 * MS)
    assert [e["kind"] for e in lookups.poll()] == ["dns", "gai"]  # the lookup waits for late wire events

    clocks.step_wall(step_ns)
    assert lookups.poll() == [] and clock.steps == 1  # the gai poll refreshed the clock: the wait moves
    clocks.advance(GAI_GRACE_NS - 1 * MS)
    assert lookups.tick(clocks.wall) == []
    clocks.advance(1 * MS)
    [lookup] = lookups.tick(clocks.wall)
    assert lookup["kind"] == "lookup" and [a["answered"] for a in lookup["attempts"]] == [True]
