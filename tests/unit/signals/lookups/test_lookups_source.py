"""LookupsSource around fake inner sources: what it passes on, when it joins, and its stats."""

from __future__ import annotations

from test_lookups_join import MS, T0, S, dns, gai

from dnstrace.enrich.resolvconf import parse
from dnstrace.errors import DnstraceError
from dnstrace.flow import Source
from dnstrace.kernel.clock import KernelClock
from dnstrace.signals.lookups.source import LookupsSource

CONF = parse("nameserver 10.53.0.2\noptions timeout:2 attempts:1\n")


class FakeTracker:
    def resolv_conf_of(self, pid):
        return CONF


class FakeDns(Source):
    name = "dns"

    def __init__(self):
        self.tracker = FakeTracker()
        self.queued: list = []  # what the next poll/tick/flush returns
        self.inflight: list = []
        self.calls: list = []

    def start(self):
        self.calls.append("start")

    def fds(self):
        return [3, 4]

    def _take(self):
        events, self.queued = self.queued, []
        return events

    def poll(self):
        return self._take()

    def tick(self, now_ns):
        self.calls.append(("tick", now_ns))
        return self._take()

    def flush(self):
        self.calls.append("flush")
        return self._take()

    def pending(self):
        return self.inflight

    def stats(self):
        return {"lost": 2}

    def close(self):
        self.calls.append("close")


class FakeGai(Source):
    name = "gai"

    def __init__(self, fail=None, fd=7):
        self.fail = fail
        self.fd = fd
        self.queued: list = []
        self.calls: list = []

    def start(self):
        self.calls.append("start")
        if self.fail:
            raise DnstraceError(self.fail)

    def fds(self):
        return [self.fd]

    def poll(self):
        events, self.queued = self.queued, []
        return events

    def tick(self, now_ns):
        self.calls.append(("tick", now_ns))
        return self.poll()

    def flush(self):
        self.calls.append("flush")
        return self.poll()

    def stats(self):
        return {"calls": 5}

    def close(self):
        self.calls.append("close")


class Clock:
    """A KernelClock whose wall and monotonic readings the test sets."""

    def __init__(self, wall=T0, mono=0):
        self.wall, self.mono = wall, mono
        self.clock = KernelClock(wall_ns=lambda: self.wall, mono_ns=lambda: self.mono)


def source(gai_sources=None, clock=None):
    clock = clock or Clock()
    dns_source = FakeDns()
    return LookupsSource(dns_source, gai_sources if gai_sources is not None else [FakeGai()], clock.clock), clock


def test_start_keeps_the_gai_sources_that_started_and_reports_the_others(capsys):
    good, bad = FakeGai(fd=7), FakeGai(fail="no libc found", fd=8)
    src, _ = source([bad, good])
    src.start()
    assert src.dns.calls == ["start"]
    assert src.active_gai == [good] and bad.calls == ["start", "close"]
    assert src.gai_problem == "no libc found"
    assert "getaddrinfo probes unavailable (no libc found); wire lookups only" in capsys.readouterr().err
    assert src.fds() == [3, 4, 7]
    stats = src.stats()
    assert stats["dns_lost"] == 2 and stats["gai_calls"] == 5 and stats["gai_unavailable"] == "no libc found"
    assert stats["lookups_gai"] == 0 and stats["wire_buffered"] == 0 and stats["local_server_scans"] == 0
    src.close()
    assert good.calls[-1] == "close" and src.dns.calls[-1] == "close" and src.active_gai == []
    assert bad.calls == ["start", "close"]  # closed once, at its failed start


def test_stats_without_a_gai_problem_name_none():
    src, _ = source()
    src.start()
    assert "gai_unavailable" not in src.stats()


def test_poll_passes_events_on_and_joins_a_libc_call_after_its_grace():
    g = FakeGai()
    src, clock = source([g])
    src.start()
    query = dns(T0 + MS, "web.test")
    call = gai(T0, 2 * MS, "web.test")
    src.dns.queued = [query]
    g.queued = [call]
    clock.mono = 3 * MS  # now: T0 + 3 ms, the call's grace period is not over
    assert src.poll() == [query, call]
    assert src.poll() == []
    clock.mono = 2 * MS + 200 * MS  # exactly the end of the grace period
    [lookup] = src.poll()
    assert lookup["kind"] == "lookup" and lookup["source"] == "gai" and lookup["name"] == "web.test"
    assert [a["qname"] for a in lookup["attempts"]] == ["web.test"]
    assert lookup["resolv_conf"]["nameservers"] == ["10.53.0.2"]


def test_tick_passes_the_time_on_and_joins_wire_lookups():
    g = FakeGai()
    src, _ = source([g])
    src.start()
    query = dns(T0, "api.test", pid=4242)
    src.dns.queued = [query]
    assert src.tick(T0) == [query]
    assert src.dns.calls[-1] == ("tick", T0) and g.calls[-1] == ("tick", T0)
    [lookup] = src.tick(T0 + 2 * S)
    assert lookup["source"] == "wire" and lookup["name"] == "api.test" and lookup["pid"] == 4242


def test_tick_holds_wire_queries_while_the_inner_source_has_them_in_flight():
    src, _ = source([])
    src.start()
    src.dns.queued = [dns(T0, "api.test", pid=4242)]
    src.dns.inflight = [dns(T0 + MS, "api.test", "AAAA", pid=4242, answered=False)]
    src.tick(T0)
    assert src.tick(T0 + 2 * S) == []
    src.dns.inflight = []
    assert len(src.tick(T0 + 2 * S)) == 1


def test_flush_drains_the_inner_sources_then_every_waiting_lookup():
    g = FakeGai()
    src, clock = source([g])
    src.start()
    query = dns(T0 + MS, "web.test")
    call = gai(T0, 2 * MS, "web.test")
    src.dns.queued = [query]
    g.queued = [call]
    clock.mono = 3 * MS  # well inside the grace period: only flush gets the lookup out
    events = src.flush()
    assert "flush" in src.dns.calls and "flush" in g.calls
    assert events[:2] == [query, call]
    [lookup] = events[2:]
    assert lookup["source"] == "gai" and len(lookup["attempts"]) == 1
    assert src.stats()["gai_buffered"] == 0


def test_flush_joins_even_names_still_in_flight():
    src, clock = source([])
    src.start()
    # at shutdown nothing more comes: a name still in flight is joined as it stands
    src.dns.queued = [dns(T0, "slow.test", pid=5)]
    src.dns.inflight = [dns(T0, "slow.test", "AAAA", pid=5, answered=False)]
    events = src.flush()
    assert [e["kind"] for e in events] == ["dns", "lookup"]


def test_a_wall_clock_step_moves_the_buffered_calls_once():
    g = FakeGai()
    src, clock = source([g])
    src.start()
    g.queued = [gai(T0, 2 * MS, "web.test")]
    clock.mono = 3 * MS
    src.poll()
    assert src.joiner.gai_pending[0][0] == T0 + 202 * MS
    clock.clock.offset_ns += 10 * S  # the wall clock jumped forward 10 s
    clock.mono = 4 * MS  # now: T0 + 10.004 s, the call's grace ends at T0 + 10.202 s on the new scale
    assert src.poll() == []
    assert src.joiner.gai_pending[0][0] == T0 + 10 * S + 202 * MS
    src.poll()  # the same offset again: no second shift
    assert src.joiner.gai_pending[0][0] == T0 + 10 * S + 202 * MS
    clock.mono = 202 * MS
    assert [e["kind"] for e in src.poll()] == ["lookup"]
