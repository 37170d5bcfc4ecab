"""LookupJoiner on recorded event streams (shapes as dnstrace emits them)."""

from __future__ import annotations

from dnstrace.enrich.resolvconf import parse
from dnstrace.signals.lookups.source import LookupJoiner, name_matches

MS = 1_000_000
S = 1_000_000_000
T0 = 1_795_291_193_047_037_756
PID = 10811


def gai(ts, latency, name, pid=PID, tid=None, error=None):
    return {"kind": "gai", "ts": ts, "pid": pid, "tid": tid or pid, "comm": "getent", "func": "getaddrinfo",
            "name": name, "latency_ns": latency, "error": error, "libc": "/usr/lib/x86_64-linux-gnu/libc.so.6"}


def dns(ts, qname, qtype="A", server="10.53.0.2", latency=200_000, rcode="NOERROR", ancount=1, pid=PID,
        sport=47672, msg_id=36848, proto="udp", tc=False, answered=True, **flags):
    event = {"kind": "dns", "ts": ts, "pid": pid, "tid": pid, "comm": "getent", "qname": qname, "qtype": qtype,
             "server": server, "dport": 53, "sport": sport, "proto": proto, "id": msg_id, "ns_index": 0,
             "retransmit": False, "same_port_pair": False, "tcp_fallback": False, "fallback_of": None,
             "rcode": rcode if answered else None, "tc": tc, "ancount": ancount if answered else 0,
             "latency_ns": latency if answered else None, "answered": answered, "answers": []}
    event.update(flags)
    if not answered:
        event["timeout_ns"] = S
    return event


def joiner():
    conf = parse("nameserver 10.53.0.9\nnameserver 10.53.0.2\noptions timeout:1 attempts:1\n")
    return LookupJoiner(resolv_for_pid=lambda pid: conf)


def test_name_matches_search_expansions_only():
    assert name_matches("web.example.test", "web.example.test")
    assert name_matches("WEB.a.test", "web")
    assert not name_matches("webx.a.test", "web")
    assert not name_matches(None, "web")


def test_dead_first_nameserver_two_attempts_each_unanswered_then_answered():
    j = joiner()
    dead_a = dns(T0 + 300_000, "web.example.test", server="10.53.0.9", answered=False, msg_id=1)
    dead_aaaa = dns(T0 + 700_000, "web.example.test", "AAAA", server="10.53.0.9", answered=False, msg_id=2)
    ok_a = dns(T0 + S + 2 * MS, "web.example.test", sport=50000, msg_id=1, retransmit=True)
    ok_aaaa = dns(T0 + S + 2 * MS + 50_000, "web.example.test", "AAAA", sport=50000, msg_id=2, retransmit=True)
    for event in (ok_a, ok_aaaa):
        j.add(event, T0 + S + 3 * MS)
    call = gai(T0, S + 5 * MS, "web.example.test")
    j.add(call, T0 + S + 6 * MS)
    # the dead server's queries are still in flight when the call returns
    assert j.flush(T0 + S + 10 * MS, [dead_a, dead_aaaa]) == []  # grace period not over
    [lookup] = j.flush(T0 + S + 300 * MS, [dead_a, dead_aaaa])
    assert lookup["kind"] == "lookup" and lookup["source"] == "gai" and lookup["name"] == "web.example.test"
    servers = [(a["server"], a["qtype"], a["answered"]) for a in lookup["attempts"]]
    assert servers == [("10.53.0.9", "A", False), ("10.53.0.9", "AAAA", False),
                       ("10.53.0.2", "A", True), ("10.53.0.2", "AAAA", True)]
    assert lookup["timeouts"] == 2 and lookup["servers"] == ["10.53.0.9", "10.53.0.2"]
    assert lookup["resolv_conf"]["nameservers"] == ["10.53.0.9", "10.53.0.2"]
    assert lookup["latency_ns"] == S + 5 * MS
    # their timeout events arrive later: already part of the lookup, not a new wire lookup
    j.add(dead_a, T0 + 2 * S)
    j.add(dead_aaaa, T0 + 2 * S)
    assert j.flush(T0 + 10 * S, []) == []
    assert j.stats()["wire_buffered"] == 0


def test_search_list_expansions_in_order_and_other_names_left_out():
    j = joiner()
    names = ["nope.example.a.test", "nope.example.b.test", "nope.example"]
    events = []
    for i, name in enumerate(names):
        events.append(dns(T0 + i * MS + 100, name, rcode="NXDOMAIN", ancount=0, msg_id=10 + i))
        events.append(dns(T0 + i * MS + 200, name, "AAAA", rcode="NXDOMAIN", ancount=0, msg_id=20 + i))
    other_thread = dns(T0 + MS // 2, "api.example.test", msg_id=99, sport=1234)
    for event in reversed(events + [other_thread]):  # arrival order does not matter
        j.add(event, T0 + 4 * MS)
    j.add(gai(T0, 4 * MS, "nope.example", error="EAI_NONAME"), T0 + 4 * MS)
    [lookup] = j.flush(T0 + S // 2)
    assert [(a["qname"], a["qtype"]) for a in lookup["attempts"]] == [
        (n, t) for n in names for t in ("A", "AAAA")]
    assert lookup["error"] == "EAI_NONAME"
    # the other name, unclaimed, becomes a wire lookup once the hold time passed
    [wire] = j.flush(T0 + 3 * S)
    assert wire["source"] == "wire" and wire["name"] == "api.example.test"


def test_wire_lookup_without_libc_grouped_by_name_and_gap():
    j = joiner()
    pid = 4242
    a = dns(T0, "svc.ns.svc.cluster.local", pid=pid, rcode="NXDOMAIN", ancount=0)
    b = dns(T0 + MS, "svc.ns", pid=pid, latency=300_000)
    later = dns(T0 + 5 * S, "svc.ns", pid=pid, msg_id=5)
    pending = dns(T0 + 2 * MS, "svc.ns", "AAAA", pid=pid, answered=False)
    for event in (a, b):
        j.add(event, T0 + 2 * MS)
    assert j.flush(T0 + 3 * S, [pending]) == []  # the process still waits for an answer
    j.add(pending, T0 + 3 * S)
    j.add(later, T0 + 5 * S + MS)
    lookups = j.flush(T0 + 8 * S)
    assert [lk["source"] for lk in lookups] == ["wire", "wire"]
    first, second = lookups
    assert first["name"] == "svc.ns" and first["pid"] == pid and len(first["attempts"]) == 3
    assert first["error"] is None and first["timeouts"] == 1
    assert first["latency_ns"] == 2 * MS + S  # the unanswered AAAA waited its 1 s timeout
    assert len(second["attempts"]) == 1


def test_wire_lookup_error_from_answers():
    j = joiner()
    j.add(dns(T0, "gone.test", rcode="NXDOMAIN", ancount=0, pid=7), T0)
    j.add(dns(T0 + MS, "dead.test", answered=False, pid=8), T0 + S)
    lookups = {lk["name"]: lk for lk in j.flush(T0 + 5 * S)}
    assert lookups["gone.test"]["error"] == "NXDOMAIN"
    assert lookups["dead.test"]["error"] == "TIMEOUT"


def test_tcp_retry_after_truncation_is_an_attempt():
    j = joiner()
    udp = dns(T0 + 100, "big.example.test", tc=True, ancount=29)
    tcp = dns(T0 + 3 * MS, "big.example.test", proto="tcp", sport=54872, tcp_fallback=True, retransmit=True,
              ancount=40)
    j.add(udp, T0 + 4 * MS)
    j.add(tcp, T0 + 4 * MS)
    j.add(gai(T0, 4 * MS, "big.example.test"), T0 + 5 * MS)
    [lookup] = j.flush(T0 + S)
    assert [(a["proto"], a["tc"], a["tcp_fallback"]) for a in lookup["attempts"]] == [
        ("udp", True, False), ("tcp", False, True)]
    assert lookup["tcp_fallback"] is True


def test_bounded_buffers():
    j = LookupJoiner(max_wire_events=5, max_gai_pending=3)
    for i in range(20):
        j.add(dns(T0 + i, f"n{i}.test", pid=1000 + i), T0 + i)
        j.add(gai(T0 + i, 1, f"n{i}.test", pid=1000 + i), T0 + i)
    stats = j.stats()
    assert stats["wire_buffered"] == 5 and stats["wire_evicted"] == 15
    assert stats["gai_buffered"] == 3 and stats["gai_evicted"] == 17


def test_busy_process_still_gets_wire_lookups_for_finished_names():
    j = joiner()
    pid = 99
    j.add(dns(T0, "done.test", pid=pid), T0)
    other_pending = dns(T0 + S, "slow.test", pid=pid, answered=False)
    [lookup] = j.flush(T0 + 3 * S, [other_pending])  # slow.test in flight does not hold done.test
    assert lookup["name"] == "done.test"
    j.add(dns(T0 + 2 * S, "slow.test", "AAAA", pid=pid), T0 + 2 * S)
    assert j.flush(T0 + 4 * S, [other_pending]) == []  # slow.test itself waits for its answer
    assert len(j.flush(T0 + 40 * S, [other_pending])) == 1  # ...but not forever
