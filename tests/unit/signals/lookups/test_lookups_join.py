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


def test_name_matches_ignores_trailing_dots_and_needs_both_names():
    assert name_matches("web.example.test.", "WEB.example.test")
    assert name_matches("web.a.test", "web.")
    assert not name_matches("web", None)
    assert not name_matches("", "web") and not name_matches("web", "")
    assert not name_matches("web", "web.a.test")


def test_a_call_claims_queries_up_to_two_milliseconds_either_side_of_it():
    j = joiner()
    inside = [dns(T0 - 2 * MS, "w.test", msg_id=1), dns(T0 + 10 * MS + 2 * MS, "w.test", msg_id=2)]
    outside = [dns(T0 - 2 * MS - 1, "w.test", msg_id=3), dns(T0 + 12 * MS + 1, "w.test", msg_id=4)]
    for event in inside + outside:
        j.add(event, T0 + 13 * MS)
    pending_inside = dns(T0 - 2 * MS, "w.test", "AAAA", answered=False, msg_id=5)
    pending_at_end = dns(T0 + 12 * MS, "w.test", "AAAA", answered=False, msg_id=10)
    pending_outside = dns(T0 + 12 * MS + 1, "w.test", "AAAA", answered=False, msg_id=6)
    pending_other_pid = dns(T0, "w.test", "AAAA", answered=False, msg_id=7, pid=PID + 1)
    pending_other_name = dns(T0, "x.test", "AAAA", answered=False, msg_id=8)
    j.add(gai(T0, 10 * MS, "w.test"), T0 + 13 * MS)
    inflight = [pending_inside, pending_at_end, pending_outside, pending_other_pid, pending_other_name]
    [lookup] = j.flush(T0 + 10 * MS + 200 * MS, inflight)
    assert [a["id"] for a in lookup["attempts"]] == [1, 5, 2, 10]
    assert lookup["attempts"][1]["answered"] is False and lookup["attempts"][1]["timeout_ns"] == S
    assert lookup["timeouts"] == 2
    assert j.stats()["wire_buffered"] == 2 and j.stats()["lookups_gai"] == 1
    # an in-flight query already claimed is not claimed twice
    j.add(gai(T0, 10 * MS, "w.test"), T0 + 13 * MS)
    [again] = j.flush(T0 + 10 * MS + 200 * MS, inflight)
    assert [a["id"] for a in again["attempts"]] == []
    assert again["servers"] == [] and again["same_port_pair"] is False and again["tcp_fallback"] is False


def test_a_call_is_joined_at_the_end_of_its_grace_not_before():
    j = joiner()
    j.add(dns(T0 + MS, "w.test"), T0 + MS)
    j.add(gai(T0, 5 * MS, "w.test"), T0 + 6 * MS)
    assert j.flush(T0 + 205 * MS - 1) == []
    [lookup] = j.flush(T0 + 205 * MS)
    assert lookup["ts"] == T0 and lookup["tid"] == PID and lookup["comm"] == "getent"
    assert lookup["func"] == "getaddrinfo" and lookup["error"] is None and lookup["via"] is None
    assert lookup["resolver"] == "glibc" and lookup["resolver_from"] == "libc"
    assert lookup["waited_timeouts"] is False
    # a call without latency ends where it starts
    j.add(dns(T0 + 3 * S, "v.test"), T0 + 3 * S)
    j.add(dict(gai(T0 + 3 * S, None, "v.test")), T0 + 3 * S)
    assert j.flush(T0 + 3 * S + 200 * MS - 1) == []
    [late] = j.flush(T0 + 3 * S + 200 * MS)
    assert late["latency_ns"] is None and late["attempts"][0]["qname"] == "v.test"


def test_waited_timeouts_only_for_calls_as_long_as_four_fifths_of_the_timeout():
    def lookup_of(latency):
        j = joiner()  # options timeout:1
        j.add(dns(T0 + MS, "w.test", answered=False), T0 + MS)
        j.add(dns(T0 + 2 * MS, "w.test", server="10.53.0.9"), T0 + 2 * MS)
        j.add(gai(T0, latency, "w.test"), T0 + latency)
        [lookup] = j.flush(T0 + latency + 200 * MS)
        return lookup

    assert lookup_of(800 * MS)["waited_timeouts"] is True
    assert lookup_of(800 * MS - 1)["waited_timeouts"] is False
    no_conf = LookupJoiner()
    no_conf.add(dns(T0 + MS, "w.test", answered=False), T0 + MS)
    no_conf.add(gai(T0, 3 * MS, "w.test"), T0 + 3 * MS)
    [lookup] = no_conf.flush(T0 + S)
    assert lookup["waited_timeouts"] is True and lookup["resolv_conf"] is None


def test_wire_lookups_wait_the_hold_time_after_the_last_arrival():
    j = joiner()
    j.add(dns(T0, "a.test", pid=5), T0)
    j.add(dns(T0 + S, "a.test", "AAAA", pid=5), T0 + S)
    assert j.flush(T0 + S + 1_500 * MS - 1) == []
    [lookup] = j.flush(T0 + S + 1_500 * MS)
    assert [a["qtype"] for a in lookup["attempts"]] == ["A", "AAAA"]
    assert lookup["tid"] == 5 and lookup["func"] is None and lookup["resolver"] == "unknown"
    assert j.stats() == {"lookups_gai": 0, "lookups_wire": 1, "wire_evicted": 0, "gai_evicted": 0,
                         "wire_buffered": 0, "gai_buffered": 0}


def test_a_process_resolving_without_pause_gets_its_lookups_out_after_thirty_seconds():
    j = joiner()
    for i in range(31):
        j.add(dns(T0 + i * S, "busy.test", pid=5, msg_id=i), T0 + i * S)
        if i < 30:
            assert j.flush(T0 + i * S) == [], i
    lookups = j.flush(T0 + 30 * S)
    assert sum(len(lk["attempts"]) for lk in lookups) == 31
    # one name kept in flight is held, but only for thirty seconds after its first arrival
    j = joiner()
    j.add(dns(T0, "slow.test", pid=6), T0)
    busy = [dns(T0, "slow.test", "AAAA", pid=6, answered=False)]
    assert j.flush(T0 + 30 * S - 1, busy) == []
    assert len(j.flush(T0 + 30 * S, busy)) == 1


def test_wire_lookup_name_and_error_from_its_queries():
    j = joiner()
    j.add(dns(T0, "db.ns.svc.cluster.local", pid=5, rcode="NXDOMAIN", ancount=0), T0)
    j.add(dns(T0 + MS, "db.ns", pid=5, rcode="SERVFAIL", ancount=0), T0)
    j.add(dns(T0 + 2 * MS, "db.ns.svc", pid=5, rcode="NOERROR", ancount=0), T0)
    [lookup] = j.flush(T0 + 2 * S)
    assert lookup["name"] == "db.ns" and lookup["error"] == "NOERROR"  # the last answer: no data
    j.add(dns(T0, "ok.test", pid=6, rcode="NOERROR", ancount=2), T0)
    j.add(dns(T0 + MS, "ok.test", "AAAA", pid=6, rcode="NXDOMAIN", ancount=0), T0)
    [found] = j.flush(T0 + 2 * S)
    assert found["error"] is None
    j.add(dns(T0, "srv.test", pid=7, rcode="SERVFAIL", ancount=1), T0)
    [failed] = j.flush(T0 + 2 * S)
    assert failed["error"] == "SERVFAIL"


def test_queries_without_a_pid_or_of_other_kinds_are_not_buffered():
    j = joiner()
    j.add(dns(T0, "a.test", pid=0), T0)
    j.add({"kind": "tcp", "ts": T0, "pid": 5}, T0)
    assert j.stats()["wire_buffered"] == 0 and j.flush(T0 + 10 * S) == []


def test_a_pids_buffer_holds_its_newest_4096_queries():
    j = LookupJoiner()
    for i in range(4098):
        j.add(dns(T0 + i, "n.test", msg_id=i, pid=5), T0 + i)
    stats = j.stats()
    assert stats["wire_buffered"] == 4096 and stats["wire_evicted"] == 2
    assert [e["id"] for _, e in j.wire[5][:2]] == [2, 3]


def test_the_oldest_query_of_all_processes_goes_first():
    j = LookupJoiner(max_wire_events=3)
    j.add(dns(T0 + 5, "b.test", pid=2, msg_id=1), T0 + 5)
    j.add(dns(T0 + 1, "a.test", pid=1, msg_id=2), T0 + 1)
    j.add(dns(T0 + 6, "b.test", pid=2, msg_id=3), T0 + 6)
    j.add(dns(T0 + 7, "c.test", pid=3, msg_id=4), T0 + 7)
    assert 1 not in j.wire and [e["id"] for _, e in j.wire[2]] == [1, 3]
    j.add(dns(T0 + 8, "c.test", pid=3, msg_id=5), T0 + 8)
    assert [e["id"] for _, e in j.wire[2]] == [3]
    assert j.stats()["wire_evicted"] == 2 and j.stats()["wire_buffered"] == 3


def test_shift_moves_buffered_calls_and_queries():
    j = joiner()
    j.add(dns(T0, "a.test", pid=5), T0)
    j.add(gai(T0, MS, "b.test", pid=6), T0)
    j.shift(-S)
    assert j.gai_pending[0][0] == T0 + MS + 200 * MS - S
    assert j.wire[5][0][0] == T0 - S
    assert len(j.flush(T0 + 500 * MS)) == 2  # both due on the stepped-back scale


class FakeLocalServers:
    def __init__(self, local):
        self.local = local
        self.calls = []
        self.counters = {"local_server_scans": 3}

    def find(self, pid, server, port):
        self.calls.append((pid, server, port))
        return self.local if server == self.local.server else None


def test_lookups_through_a_node_local_cache_name_it_and_its_upstream_queries():
    from dnstrace.enrich.chains import LocalServer

    cache = LocalServer(pid=900, comm="unbound", program="unbound", server="127.0.0.53", port=53)
    finder = FakeLocalServers(cache)
    j = LookupJoiner(local_servers=finder)
    app = dns(T0, "w.test", server="127.0.0.53", pid=5, latency=5 * MS)
    direct = dns(T0 + MS, "w.test", "AAAA", server="10.53.0.2", pid=5, dport=None)
    upstream = dns(T0 + 2 * MS, "w.test", server="127.0.0.53", pid=900, msg_id=77)  # its own address
    upstream["comm"] = "unbound"
    again = dns(T0 + 2 * MS, "w.test", "AAAA", server="127.0.0.53", pid=5, latency=5 * MS, msg_id=9, retransmit=True)
    for event in (app, direct, upstream, again):
        j.add(event, T0 + 3 * MS)
    # looked up once per (process, server) while the process lives, a missing port read as 53
    assert finder.calls == [(5, "127.0.0.53", 53), (5, "10.53.0.2", 53), (900, "127.0.0.53", 53)]
    lookups = {lk["pid"]: lk for lk in j.flush(T0 + 3 * S)}
    lookup = lookups[5]
    assert lookup["via"] == {"pid": 900, "comm": "unbound", "program": "unbound", "server": "127.0.0.53",
                             "port": 53}
    to_cache, to_server, to_cache_again = lookup["attempts"]
    assert [u["id"] for u in to_cache["upstream"]] == [77] and "upstream" not in to_server
    assert to_cache_again["upstream"] == []  # the cache asked for A only
    # the cache's own lookup does not go through itself
    assert lookups[900]["via"] is None
    # the join asks again per attempt (the answers are cached by the finder), a missing port read as 53
    assert finder.calls[3:] == [(5, "127.0.0.53", 53), (5, "10.53.0.2", 53), (5, "127.0.0.53", 53),
                                (900, "127.0.0.53", 53)]
    assert j.stats()["local_server_scans"] == 3


def test_a_cache_on_another_port_is_found_on_that_port():
    from dnstrace.enrich.chains import LocalServer

    cache = LocalServer(pid=900, comm="dnsmasq", program="dnsmasq", server="127.0.0.1", port=5353)
    finder = FakeLocalServers(cache)
    j = LookupJoiner(local_servers=finder)
    j.add(dns(T0, "w.test", server="127.0.0.1", pid=5, dport=5353), T0)
    [lookup] = j.flush(T0 + 3 * S)
    assert lookup["via"]["port"] == 5353
    assert finder.calls == [(5, "127.0.0.1", 5353), (5, "127.0.0.1", 5353)]


def test_a_query_exactly_one_gap_after_the_last_answer_joins_the_lookup():
    j = joiner()
    j.add(dns(T0, "a.test", pid=5, latency=200_000), T0)
    j.add(dns(T0 + 200_000 + S, "a.test", "AAAA", pid=5), T0 + 200_000 + S)
    assert [len(lk["attempts"]) for lk in j.flush(T0 + 5 * S)] == [2]
    j.add(dns(T0, "b.test", pid=5, latency=200_000), T0)
    j.add(dns(T0 + 200_000 + S + 1, "b.test", "AAAA", pid=5), T0 + 200_000 + S)
    assert [len(lk["attempts"]) for lk in j.flush(T0 + 5 * S)] == [1, 1]


def test_calls_are_joined_in_order_each_when_due():
    j = joiner()
    j.add(gai(T0, MS, "a.test"), T0 + MS)
    j.add(gai(T0 + S, MS, "b.test"), T0 + S + MS)
    assert [lk["name"] for lk in j.flush(T0 + 201 * MS)] == ["a.test"]
    assert j.stats()["gai_buffered"] == 1
    assert [lk["name"] for lk in j.flush(T0 + S + 201 * MS)] == ["b.test"]


def test_a_held_process_or_name_does_not_hold_the_others():
    j = joiner()
    j.add(dns(T0 + 2 * S, "late.test", pid=5), T0 + 2 * S)  # pid 5 first, still within its hold
    j.add(dns(T0, "early.test", pid=6), T0)
    [lookup] = j.flush(T0 + 2 * S + MS)
    assert lookup["pid"] == 6
    j = joiner()
    j.add(dns(T0, "slow.test", pid=7), T0)  # first name of the process, still in flight
    j.add(dns(T0 + MS, "done.test", pid=7), T0 + MS)
    [lookup] = j.flush(T0 + 2 * S, [dns(T0 + MS, "slow.test", "AAAA", pid=7, answered=False)])
    assert lookup["name"] == "done.test"
    assert j.stats()["wire_buffered"] == 1


def test_a_wire_lookup_starts_at_its_first_query():
    j = joiner()
    j.add(dns(T0 + MS, "a.test", "AAAA", pid=5, tid=51), T0 + MS)
    j.add(dns(T0, "a.test", pid=5, tid=50), T0 + MS)
    [lookup] = j.flush(T0 + 3 * S)
    assert lookup["ts"] == T0 and lookup["tid"] == 50
    assert [a["qtype"] for a in lookup["attempts"]] == ["A", "AAAA"]


def test_default_bounds_hold_65536_queries_and_16384_calls():
    j = LookupJoiner()
    for i in range(65537):
        j.add({"kind": "dns", "ts": T0 + i, "pid": 1 + i // 4096, "qname": "n.test", "id": i}, T0 + i)
    for i in range(16385):
        j.add({"kind": "gai", "ts": T0 + i, "pid": 1, "name": "n.test", "latency_ns": 1}, T0 + i)
    stats = j.stats()
    assert (stats["wire_buffered"], stats["wire_evicted"]) == (65536, 1)
    assert (stats["gai_buffered"], stats["gai_evicted"]) == (16384, 1)


def test_the_first_seen_set_is_cleared_at_65536_entries():
    from dnstrace.enrich.chains import LocalServer

    finder = FakeLocalServers(LocalServer(pid=900, comm="unbound", program="unbound", server="none", port=53))
    j = LookupJoiner(local_servers=finder)
    for i in range(65537):
        j.add({"kind": "dns", "ts": T0 + i, "pid": 5, "server": f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
               "id": i}, T0 + i)
    assert len(finder.calls) == 65537
    # the 65536th server was still remembered until the 65537th came and the set was cleared
    j.add({"kind": "dns", "ts": T0 + 70_000, "pid": 5, "server": "10.0.255.255", "id": 70_000}, T0 + 70_000)
    assert len(finder.calls) == 65538  # forgotten at the clear: looked up again
    j.add({"kind": "dns", "ts": T0 + 70_001, "pid": 5, "server": "10.0.255.255", "id": 70_001}, T0 + 70_001)
    assert len(finder.calls) == 65538


def test_a_process_held_thirty_seconds_still_holds_its_names_of_the_last_hold_time():
    j = joiner()
    j.add(dns(T0, "a.test", pid=5), T0)
    j.add(dns(T0 + 30 * S, "b.test", pid=5), T0 + 30 * S)
    assert [lk["name"] for lk in j.flush(T0 + 30 * S + MS)] == ["a.test"]
    assert [lk["name"] for lk in j.flush(T0 + 31 * S + 500 * MS)] == ["b.test"]


def test_a_process_with_a_recent_query_holds_all_its_names():
    j = joiner()
    j.add(dns(T0, "a.test", pid=5), T0)
    j.add(dns(T0 + S, "b.test", pid=5), T0 + S)
    assert j.flush(T0 + S + 500 * MS) == []  # a.test is old, but a libc call may still claim it
    assert [lk["name"] for lk in j.flush(T0 + S + 1_500 * MS)] == ["a.test", "b.test"]


def test_the_claimed_attempts_remembered_are_the_newest_65536():
    j = joiner()
    pending = [dns(T0 + i, "w.test", answered=False, msg_id=i) for i in range(65537)]
    j.add(gai(T0, S, "w.test"), T0 + S)
    [lookup] = j.flush(T0 + S + 200 * MS, pending)
    assert len(lookup["attempts"]) == 65537
    j.add(pending[1], T0 + 2 * S)  # its timeout: still known as claimed
    assert j.stats()["wire_buffered"] == 0
    j.add(pending[0], T0 + 2 * S)  # the oldest claim was forgotten
    assert j.stats()["wire_buffered"] == 1


def test_the_process_evicted_is_the_one_with_the_oldest_query_not_the_oldest_last_query():
    j = LookupJoiner(max_wire_events=3)
    j.add(dns(T0 + 1, "a.test", pid=1, msg_id=1), T0 + 1)
    j.add(dns(T0 + 5, "b.test", pid=2, msg_id=2), T0 + 5)
    j.add(dns(T0 + 10, "a.test", pid=1, msg_id=3), T0 + 10)
    j.add(dns(T0 + 11, "c.test", pid=3, msg_id=4), T0 + 11)
    assert [e["id"] for _, e in j.wire[1]] == [3] and [e["id"] for _, e in j.wire[2]] == [2]


def test_waited_timeouts_threshold_scales_with_the_configured_timeout():
    conf = parse("nameserver 10.53.0.2\noptions timeout:2\n")

    def waited(latency):
        j = LookupJoiner(resolv_for_pid=lambda pid: conf)
        j.add(dns(T0 + MS, "w.test", answered=False), T0 + MS)
        j.add(gai(T0, latency, "w.test"), T0 + latency)
        [lookup] = j.flush(T0 + latency + 200 * MS)
        return lookup["waited_timeouts"]

    assert waited(1_600 * MS) is True
    assert waited(1_600 * MS - 1) is False
