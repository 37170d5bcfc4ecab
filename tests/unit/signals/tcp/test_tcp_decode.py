"""Decoding of tcp.bpf.c events and per-flow counters (recorded bytes, no kernel)."""

from __future__ import annotations

import socket

from dnstrace.signals.tcp.source import EVENT, FLOW_KEY, FLOW_VALUE, FlowDeltas, decode_event


def v4(addr: str) -> bytes:
    return socket.inet_aton(addr) + bytes(12)


def test_syn_retry_event_decodes():
    raw = EVENT.pack(5_000, 1_020_000_000, 4711, 4712, 2, 0, v4("10.0.0.2"), v4("10.0.0.1"), 40000, 53, 2, 1, 0,
                     b"kafka-writer\0\0\0\0")
    event = decode_event(raw, offset_ns=1_000)
    assert event == {
        "kind": "syn_retry", "ts": 6_000, "pid": 4711, "tid": 4712, "comm": "kafka-writer", "family": "ipv4",
        "saddr": "10.0.0.2", "sport": 40000, "daddr": "10.0.0.1", "dport": 53, "retry": 2,
        "elapsed_ns": 1_020_000_000, "count": 1, "sampled": False,
    }


def test_connect_event_ipv6_timeout():
    d6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    raw = EVENT.pack(1, 7_100_000_000, 9, 9, 5, 110, d6, d6, 1234, 443, 10, 2, 2, b"curl" + bytes(12))
    event = decode_event(raw, 0)
    assert event["kind"] == "connect" and event["family"] == "ipv6" and event["daddr"] == "fd00::1"
    assert event["result"] == "timeout" and event["error"] == "ETIMEDOUT" and event["retries"] == 5
    assert event["latency_ns"] == 7_100_000_000


def test_unknown_owner_has_no_pid():
    raw = EVENT.pack(1, 0, 0, 0, 1, 0, v4("1.1.1.1"), v4("2.2.2.2"), 1, 2, 2, 1, 0, bytes(16))
    event = decode_event(raw, 0)
    assert event["pid"] is None and event["comm"] is None and event["elapsed_ns"] is None


def test_flow_deltas_turn_sampled_counters_into_aggregated_events():
    key = FLOW_KEY.pack(v4("10.9.9.9"), 77, 8080, 2)

    def value(sampled_retries, sampled_closed):
        sampled_results = [0, 0, 0, 0, sampled_closed, 0]
        return FLOW_VALUE.pack(1000, 50, 0, 0, 0, 0, 1000, 0, sampled_retries, *sampled_results, 0, 0, 0,
                               b"storm" + bytes(11))

    deltas = FlowDeltas()
    first = deltas.update(key, value(30, 900), now_ns=10)
    assert [(e["kind"], e["count"]) for e in first] == [("syn_retry", 30), ("connect", 900)]
    assert all(e["sampled"] and e["pid"] == 77 and e["comm"] == "storm" for e in first)
    assert first[1]["result"] == "closed" and first[1]["daddr"] == "10.9.9.9" and first[1]["dport"] == 8080
    assert deltas.update(key, value(30, 900), now_ns=20) == []
    again = deltas.update(key, value(31, 1000), now_ns=30)
    assert [(e["kind"], e["count"]) for e in again] == [("syn_retry", 1), ("connect", 100)]


class _FakeReader:
    fd = 99
    malformed = 0

    def __init__(self, records):
        self.waiting = list(records)

    def drain(self, layout):
        out, self.waiting = [EVENT.unpack(layout.pack(*r)) for r in self.waiting], []
        return out


def test_flush_reports_what_was_sampled_since_the_last_tick():
    """At shutdown the last second's sampled counts are emitted, so the stream adds up exactly."""
    from dnstrace.signals.tcp.source import TcpSource

    key = FLOW_KEY.pack(v4("10.9.9.9"), 77, 8080, 2)

    def value(sampled_closed, last_ns):
        return FLOW_VALUE.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, sampled_closed, 0, 0, 0, last_ns,
                               b"storm" + bytes(11))

    flows = {key: value(40, 0)}
    source = TcpSource(event_budget=1)
    source.bpf = {"flows": flows}
    source.reader = _FakeReader([])
    ticked = source.tick(now_ns=10**18)
    assert [(e["kind"], e["result"], e["count"]) for e in ticked] == [("connect", "closed", 40)]

    connect = (5, 1_000, 77, 77, 0, 0, v4("10.0.0.2"), v4("10.9.9.9"), 40000, 8080, 2, 2, 4, b"storm" + bytes(11))
    source.reader = _FakeReader([connect])
    flows[key] = value(52, 0)  # idle-looking flow: flush must not evict it, only report it
    flushed = source.flush()
    assert [(e["kind"], e["count"], e["sampled"]) for e in flushed] == [("connect", 1, False), ("connect", 12, True)]
    assert sum(e["count"] for e in ticked + flushed) == 53
    assert key in flows and source.flow_evictions == 0
