"""DnsTracker on hand-made packets: matching, timeouts, detector flags, bounds."""

from __future__ import annotations

import struct

from dnstrace.enrich.resolvconf import parse
from dnstrace.lab.dns_servers import build_message
from dnstrace.signals.dns.abi import DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP
from dnstrace.signals.dns.tracker import DnsTracker, Packet

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S
CLIENT, SERVER = "10.53.0.1", "10.53.0.2"


def query(ts, msg_id, qtype=1, name="web.example.test", cookie=1, sport=40000, server=SERVER, proto=PROTO_UDP,
          pid=100, seq=0):
    data = build_message(msg_id, 0x0100, name, qtype)
    if proto == PROTO_TCP:
        data = struct.pack("!H", len(data)) + data
    return Packet(ts=ts, cookie=cookie, pid=pid, tid=pid, comm="app", family=4, proto=proto,
                  direction=DIR_EGRESS, saddr=CLIENT, daddr=server, sport=sport, dport=53,
                  payload_len=len(data), seq=seq, data=data)


def answer(ts, msg_id, qtype=1, name="web.example.test", cookie=1, sport=40000, server=SERVER, proto=PROTO_UDP,
           flags=0x8180, rcode=0, answers=((1, bytes([10, 1, 2, 3])),), pid=100, seq=0):
    data = build_message(msg_id, flags, name, qtype, answers=answers, rcode=rcode)
    if proto == PROTO_TCP:
        data = struct.pack("!H", len(data)) + data
    return Packet(ts=ts, cookie=cookie, pid=pid, tid=pid, comm="app", family=4, proto=proto,
                  direction=DIR_INGRESS, saddr=server, daddr=CLIENT, sport=53, dport=sport,
                  payload_len=len(data), seq=seq, data=data)


def tracker(conf_text="nameserver 10.53.0.9\nnameserver 10.53.0.2\noptions timeout:1\n", **kwargs):
    conf = parse(conf_text)
    return DnsTracker(resolv_for_pid=lambda pid: conf, **kwargs)


def test_query_answer_match():
    t = tracker()
    assert t.packet(query(T0, 7)) == []
    [event] = t.packet(answer(T0 + 3 * MS, 7))
    assert event["kind"] == "dns" and event["pid"] == 100 and event["comm"] == "app"
    assert (event["qname"], event["qtype"], event["rcode"], event["answered"]) == ("web.example.test", "A",
                                                                                    "NOERROR", True)
    assert event["latency_ns"] == 3 * MS and event["answers"] == ["10.1.2.3"]
    assert event["server"] == SERVER and event["ns_index"] == 1 and event["sport"] == 40000


def test_answer_matches_by_question_not_arrival_order():
    t = tracker()
    t.packet(query(T0, 7, qtype=1))
    t.packet(query(T0 + 10_000, 7, qtype=28))  # a resolver reusing one id for A and AAAA
    [aaaa] = t.packet(answer(T0 + MS, 7, qtype=28, answers=()))
    [a] = t.packet(answer(T0 + 2 * MS, 7, qtype=1))
    assert (aaaa["qtype"], a["qtype"]) == ("AAAA", "A")
    assert aaaa["latency_ns"] == MS - 10_000


def test_unmatched_answer_counted():
    t = tracker()
    assert t.packet(answer(T0, 9)) == []
    assert t.stats()["unmatched_answers"] == 1


def test_timeout_uses_the_process_resolv_conf():
    t = tracker()
    t.packet(query(T0, 7, server="10.53.0.9"))
    assert t.expire(T0 + 900 * MS) == []
    [event] = t.expire(T0 + 1100 * MS)
    assert event["answered"] is False and event["rcode"] is None and event["timeout_ns"] == S
    assert event["ns_index"] == 0
    stats = t.stats()
    assert stats["servers"]["10.53.0.9:53"] == {"answered": 0, "unanswered": 1}
    assert stats["unanswered"] == 1 and stats["inflight"] == 0


def test_default_timeout_is_five_seconds_without_resolv_conf():
    t = DnsTracker()
    t.packet(query(T0, 7))
    assert t.expire(T0 + 4 * S) == []
    assert len(t.expire(T0 + 5 * S)) == 1


def test_same_port_pair_flags_the_later_query_of_a_pair_on_one_port():
    t = tracker()
    t.packet(query(T0, 1, qtype=1))
    [a] = t.packet(answer(T0 + 40_000, 1))  # a fast server answers before AAAA leaves (same sendmmsg)
    t.packet(query(T0 + 50_000, 2, qtype=28))
    [aaaa] = t.packet(answer(T0 + MS, 2, qtype=28, answers=()))
    assert (a["same_port_pair"], aaaa["same_port_pair"]) == (False, True)
    assert aaaa["pair_of"] == {"ts": T0, "id": 1, "qtype": "A"}
    # single-request-reopen: AAAA from another socket and port
    t.packet(query(T0 + S, 3, qtype=1, cookie=2, sport=40001))
    t.packet(query(T0 + S + 50_000, 4, qtype=28, cookie=3, sport=40002))
    events = t.packet(answer(T0 + S + MS, 3, cookie=2, sport=40001))
    events += t.packet(answer(T0 + S + MS, 4, qtype=28, cookie=3, sport=40002, answers=()))
    assert [e["same_port_pair"] for e in events] == [False, False]
    # far apart on one port: not a pair
    t.packet(query(T0 + 2 * S, 5, qtype=1, cookie=4, sport=40003))
    t.packet(query(T0 + 3 * S, 6, qtype=28, cookie=4, sport=40003))
    events = t.packet(answer(T0 + 3 * S + MS, 5, cookie=4, sport=40003))
    events += t.packet(answer(T0 + 3 * S + MS, 6, qtype=28, cookie=4, sport=40003, answers=()))
    assert [e["same_port_pair"] for e in events] == [False, False]


def test_single_request_option_means_sequential_not_a_pair():
    t = tracker("nameserver 10.53.0.2\noptions single-request\n")
    t.packet(query(T0, 1, qtype=1))
    t.packet(answer(T0 + MS, 1))
    t.packet(query(T0 + 2 * MS, 2, qtype=28))
    [aaaa] = t.packet(answer(T0 + 3 * MS, 2, qtype=28, answers=()))
    assert aaaa["same_port_pair"] is False


def test_tcp_fallback_links_the_truncated_answer():
    t = tracker()
    t.packet(query(T0, 11, name="big.example.test"))
    [udp] = t.packet(answer(T0 + MS, 11, name="big.example.test", flags=0x8380))
    assert udp["tc"] is True and udp["tcp_fallback"] is False
    t.packet(query(T0 + 2 * MS, 11, name="big.example.test", cookie=5, sport=50000, proto=PROTO_TCP, seq=1000))
    [tcp] = t.packet(answer(T0 + 3 * MS, 11, name="big.example.test", cookie=5, sport=50000, proto=PROTO_TCP,
                            seq=9000))
    assert tcp["proto"] == "tcp" and tcp["tcp_fallback"] is True and tcp["retransmit"] is True
    assert tcp["fallback_of"] == {"ts": T0, "id": 11, "server": SERVER, "sport": 40000}


def test_tcp_retry_from_a_forked_child_is_a_fallback():
    """dnsmasq answers TCP in a forked child: the retry after TC comes from another pid, same flow."""
    t = tracker()
    t.packet(query(T0, 12, name="big.example.test", pid=100))
    t.packet(answer(T0 + MS, 12, name="big.example.test", flags=0x8380, pid=100))
    t.packet(query(T0 + 2 * MS, 13, name="big.example.test", cookie=6, sport=50001, proto=PROTO_TCP, seq=1,
                   pid=101))
    [tcp] = t.packet(answer(T0 + 3 * MS, 13, name="big.example.test", cookie=6, sport=50001, proto=PROTO_TCP,
                            seq=9, pid=101))
    assert tcp["pid"] == 101 and tcp["tcp_fallback"] is True and tcp["fallback_of"]["sport"] == 40000


def test_tcp_query_to_another_server_is_not_a_fallback():
    t = tracker()
    t.packet(query(T0, 14, name="big.example.test"))
    t.packet(answer(T0 + MS, 14, name="big.example.test", flags=0x8380))
    t.packet(query(T0 + 2 * MS, 14, name="big.example.test", cookie=7, sport=50002, proto=PROTO_TCP, seq=1,
                   server="10.53.0.7"))
    [tcp] = t.packet(answer(T0 + 3 * MS, 14, name="big.example.test", cookie=7, sport=50002, proto=PROTO_TCP,
                            seq=9, server="10.53.0.7"))
    assert tcp["tcp_fallback"] is False


def test_same_id_to_next_nameserver_is_a_retransmit():
    t = tracker()
    t.packet(query(T0, 21, server="10.53.0.9", cookie=1))
    t.packet(query(T0 + S, 21, server=SERVER, cookie=2, sport=40100))
    [answered] = t.packet(answer(T0 + S + MS, 21, cookie=2, sport=40100))
    [timed_out] = t.expire(T0 + 2 * S)
    assert answered["retransmit"] is True and timed_out["retransmit"] is False


def test_tcp_two_queries_in_one_segment_and_continuations_skipped():
    t = tracker()
    a = query(T0, 31, proto=PROTO_TCP, seq=100)
    b = query(T0, 32, qtype=28, proto=PROTO_TCP, seq=100)
    both = a.data + b.data
    a.data, a.payload_len = both, len(both)
    t.packet(a)
    assert t.stats()["queries"] == 2
    # an answer split over two segments: the second segment is a continuation, not a message
    resp = answer(T0 + MS, 31, proto=PROTO_TCP, seq=5000, answers=[(1, bytes([10, 0, 0, i])) for i in range(20)])
    first, rest = resp.data[:100], resp.data[100:]
    resp.data, resp.payload_len = first, len(first)
    [event] = t.packet(resp)  # header and question are in the first segment: enough to match
    assert event["id"] == 31 and event["ancount"] == 20 and len(event["answers"]) < 20
    cont = answer(T0 + MS, 31, proto=PROTO_TCP, seq=5100)
    cont.data, cont.payload_len = rest, len(rest)
    t.packet(cont)
    stats = t.stats()
    assert stats["tcp_continuations"] == 1 and stats["malformed"] == 0


def test_malformed_and_bounded_inflight():
    t = tracker(max_inflight=10)
    bad = query(T0, 1)
    bad.data = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"
    t.packet(bad)
    assert t.stats()["malformed"] == 1
    for i in range(25):
        t.packet(query(T0 + i, 100 + i, cookie=10 + i))
    stats = t.stats()
    assert stats["inflight"] == 10 and stats["inflight_evicted"] == 15


def test_a_wall_clock_step_moves_queries_in_flight_with_it():
    """Packets after the step come on the new scale: latency and timeout of an earlier query stay right."""
    hour = 3600 * S
    for step in (hour, -hour):
        t = tracker()
        t.packet(query(T0, 7))
        t.packet(query(T0, 8, server="10.53.0.9"))
        t.packet(query(T0 + 10 * MS, 8, server="10.53.0.9"))  # the same id again: a retransmit
        t.shift(step)
        assert t.expire(T0 + step + 900 * MS) == []  # not an hour early, nor held an hour
        [answered] = t.packet(answer(T0 + step + 20 * MS, 7))
        assert answered["latency_ns"] == 20 * MS and answered["ts"] == T0 + step
        timed_out = t.expire(T0 + step + 1100 * MS)
        assert [e["id"] for e in timed_out] == [8, 8] and timed_out[1]["retransmit"]
        t.packet(query(T0 + step + 30 * S, 8, server="10.53.0.9"))
        [again] = t.expire(T0 + step + 32 * S)
        assert again["retransmit"]  # within the window, counted on one scale
