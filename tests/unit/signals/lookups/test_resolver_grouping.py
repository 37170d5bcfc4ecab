"""Resolver models on recorded wire streams: grouping of queries into lookups, latency, waiting."""

from __future__ import annotations

from test_lookups_join import MS, T0, S, dns, joiner

from dnstrace.enrich.resolver_models import (
    MODELS,
    ModelRegistry,
    lookup_latency,
    model_from_libc,
    model_from_wire,
    split_lookups,
    waited_for,
)

DEAD, LIVE = "10.53.0.9", "10.53.0.2"


def go_lookup(t):
    """Go: A and AAAA in parallel to the dead first server; one timeout (1 s) later, to the next one."""
    return [dns(t, "web.example.test", "A", server=DEAD, answered=False, sport=1, msg_id=1),
            dns(t + 50_000, "web.example.test", "AAAA", server=DEAD, answered=False, sport=2, msg_id=2),
            dns(t + S + 100_000, "web.example.test", "A", server=LIVE, sport=3, msg_id=1),
            dns(t + S + 150_000, "web.example.test", "AAAA", server=LIVE, sport=4, msg_id=2)]


def musl_lookup(t):
    """musl: A and AAAA to both servers at once; the live one answers in 0.3 ms."""
    return [dns(t, "web.example.test", "A", server=DEAD, answered=False, sport=5, msg_id=7),
            dns(t + 10_000, "web.example.test", "A", server=LIVE, latency=300_000, sport=5, msg_id=7),
            dns(t + 20_000, "web.example.test", "AAAA", server=DEAD, answered=False, sport=5, msg_id=8),
            dns(t + 30_000, "web.example.test", "AAAA", server=LIVE, latency=300_000, sport=5, msg_id=8)]


def test_go_retry_one_timeout_later_is_one_lookup_of_one_second():
    events = go_lookup(T0)
    [run] = split_lookups(events, gap_ns=S)  # sends 1 s apart: the gap counts from the first attempts' timeout
    assert len(run) == 4
    assert lookup_latency(run) == S + 150_000 + 200_000
    assert waited_for(run, MODELS["go"])


def test_musl_calls_are_separate_lookups_that_did_not_wait():
    events = [e for i in range(6) for e in musl_lookup(T0 + i * 200 * MS)]
    assert model_from_wire(events) is MODELS["musl"]
    runs = split_lookups(events, gap_ns=S)
    assert [len(r) for r in runs] == [4] * 6  # each call asks again: a new lookup, not one merged 3 s one
    assert all(lookup_latency(r) < MS for r in runs)
    assert not any(waited_for(r, MODELS["musl"]) for r in runs)
    assert all(waited_for(r, MODELS["glibc"]) for r in runs)  # the same wire from a sequential resolver


def test_truncated_answer_does_not_settle_its_question():
    udp = dns(T0, "big.example.test", tc=True, latency=MS)
    tcp = dns(T0 + 2 * MS, "big.example.test", proto="tcp", latency=3 * MS, sport=9, tcp_fallback=True)
    [run] = split_lookups([udp, tcp], gap_ns=S)
    assert lookup_latency(run) == 5 * MS


def test_models_from_libc_and_registry():
    assert model_from_libc("/usr/lib/musl/lib/libc.so") is MODELS["musl"]
    assert model_from_libc("/lib/ld-musl-x86_64.so.1") is MODELS["musl"]
    assert model_from_libc("/usr/lib/x86_64-linux-gnu/libc.so.6") is MODELS["glibc"]
    registry = ModelRegistry(read_binary=lambda pid, cache: MODELS["go"] if pid == 3 else None)
    registry.saw_libc_call(1, "/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert registry.model_of(1) == (MODELS["glibc"], "libc")
    assert registry.model_of(2, "unbound") == (MODELS["cache"], "program")
    assert registry.model_of(3) == (MODELS["go"], "binary")
    assert registry.model_of(4) == (MODELS["unknown"], "")


def test_joiner_go_wire_lookup_is_one_slow_success():
    j = joiner()
    for e in go_lookup(T0):
        j.add(e, T0 + S + MS)
    [lookup] = j.flush(T0 + 5 * S)
    assert lookup["source"] == "wire" and lookup["error"] is None and len(lookup["attempts"]) == 4
    assert 0.99 * S < lookup["latency_ns"] < 1.01 * S and lookup["waited_timeouts"] is True
    assert lookup["timeouts"] == 2 and lookup["servers"] == [DEAD, LIVE]
