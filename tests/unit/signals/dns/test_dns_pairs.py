"""Kernel-paired UDP exchanges (``DnsTracker.pair``, ``DnsWireSource`` pair/owner records and the
send-order sweep) on hand-made records: the same events and flags as the per-packet path."""

from __future__ import annotations

import socket

# helpers of the sibling test modules (pytest puts this directory on sys.path)
from test_dns_tracker import CLIENT, MS, SERVER, T0, S, answer, query, tracker

from dnstrace.kernel.clock import KernelClock
from dnstrace.kernel.ringbuf import drain_variable
from dnstrace.lab.dns_servers import build_message
from dnstrace.signals.dns.abi import EVENT_HDR, KIND_OWNER, KIND_PACKET, KIND_PAIR, PAIR_EXT, QUERY_ENTRY, QUERY_KEY
from dnstrace.signals.dns.source import SWEEP_AGE_NS, DnsWireSource
from support import fake_ring, fake_ring_reader


def paired(t, q, a):
    """Feed one query+answer as the kernel pairs them."""
    return t.pair(q.ts, a.ts, q.cookie, q.pid, q.tid, q.comm, q.family, q.saddr, q.sport, q.daddr, q.dport,
                  q.data, q.payload_len, a.data, a.payload_len)


def test_pair_gives_the_event_of_the_packet_path():
    per_packet, kernel_paired = tracker(), tracker()
    for msg_id, qtype, offset in ((7, 1, 0), (8, 28, 10_000), (9, 1, 5 * MS)):
        q = query(T0 + offset, msg_id, qtype=qtype)
        a = answer(T0 + offset + 2 * MS, msg_id, qtype=qtype, answers=() if qtype == 28 else ((1, b"\n\x01\x02\x03"),))
        assert per_packet.packet(q) == []
        [expected] = per_packet.packet(a)
        assert paired(kernel_paired, q, a) == [expected]
    assert expected["answers"] == ["10.1.2.3"] and expected["latency_ns"] == 2 * MS
    stats_a, stats_b = per_packet.stats(), kernel_paired.stats()
    assert stats_a == stats_b and stats_b["queries"] == stats_b["answers"] == 3 and stats_b["inflight"] == 0


def test_pair_flags_same_port_pair_and_retransmit():
    t = tracker()
    [a] = paired(t, query(T0, 7, qtype=1), answer(T0 + MS, 7, qtype=1))
    [aaaa] = paired(t, query(T0 + 50_000, 8, qtype=28), answer(T0 + MS, 8, qtype=28, answers=()))
    assert not a["same_port_pair"] and aaaa["same_port_pair"] and aaaa["pair_of"]["id"] == 7
    # the same id and question again (a resend) from another socket: a retransmit
    [again] = paired(t, query(T0 + 2000 * MS, 7, qtype=1, cookie=2, sport=40001),
                     answer(T0 + 2001 * MS, 7, qtype=1, cookie=2, sport=40001))
    assert again["retransmit"] is True and not a["retransmit"]


def test_pair_whose_answer_asks_something_else_goes_the_general_way():
    t = tracker()
    q = query(T0, 7, name="web.example.test")
    a = answer(T0 + MS, 7, name="other.example.test")
    assert paired(t, q, a) == []  # the answer does not answer this query
    stats = t.stats()
    assert stats["unmatched_answers"] == 1 and stats["inflight"] == 1 and stats["malformed"] == 0


def test_pair_with_a_malformed_answer_is_counted_once():
    t = tracker()
    q = query(T0, 7)
    bad = answer(T0 + MS, 7)
    bad.data = bad.data[:14]
    bad.payload_len = 14  # the datagram itself ends inside the question
    assert paired(t, q, bad) == []
    assert t.stats()["malformed"] == 1 and t.stats()["inflight"] == 1


# --- ring-buffer records ---------------------------------------------------------------------

def _addr(text: str) -> bytes:
    return socket.inet_aton(text) + bytes(12)


def pair_record(msg_id: int, qtype: int, qseq: int, ts: int, query_ts: int, pid: int = 4711) -> bytes:
    q = build_message(msg_id, 0x0100, "web.example.test", qtype)
    a = build_message(msg_id, 0x8180, "web.example.test", qtype)
    header = EVENT_HDR.pack(ts, 77, pid, pid, 0, qseq, _addr(SERVER), _addr(CLIENT), 53, 40000, len(a), len(a),
                            4, 17, 1, KIND_PAIR, b"app" + bytes(13), 0)
    return header + PAIR_EXT.pack(query_ts, len(q)) + q + a


def owner_record(pid: int) -> bytes:
    return EVENT_HDR.pack(1, 77, pid, pid, 0, 0, _addr(CLIENT), _addr(SERVER), 40000, 53, 0, 0, 4, 17, 0,
                          KIND_OWNER, b"app" + bytes(13), 0)


def answer_record(msg_id: int, qtype: int, ts: int, pid: int = 4711) -> bytes:
    a = build_message(msg_id, 0x8180, "web.example.test", qtype, answers=((qtype, bytes(4)),) if qtype == 1 else ())
    return EVENT_HDR.pack(ts, 77, pid, pid, 0, 0, _addr(SERVER), _addr(CLIENT), 53, 40000, len(a), len(a), 4, 17, 1,
                          KIND_PACKET, b"app" + bytes(13), 0) + a


def query_record(msg_id: int, qtype: int, qseq: int, ts: int, pid: int = 4711) -> bytes:
    q = build_message(msg_id, 0x0100, "web.example.test", qtype)
    return EVENT_HDR.pack(ts, 77, pid, pid, 0, qseq, _addr(CLIENT), _addr(SERVER), 40000, 53, len(q), len(q), 4, 17, 0,
                          KIND_PACKET, b"app" + bytes(13), 0) + q


class FakeInflight:
    """Stands for KernelInflight: the kernel map's entries as the batch read leaves them."""

    value_size, key_size = 272, 16

    def __init__(self, entries):
        self.values, self.keys = bytearray(), bytearray()
        for cookie, msg_id, fields, data in entries:
            self.values += (QUERY_ENTRY.pack(*fields) + data).ljust(self.value_size, b"\0")
            self.keys += QUERY_KEY.pack(cookie, msg_id).ljust(self.key_size, b"\0")
        self.count = len(entries)
        self.deleted = []

    def read(self):
        return self.count

    def delete(self, index):
        self.deleted.append(index)
        return True


def drain(source, records):
    producer, consumer, _ = fake_ring([(0, r) for r in records], data_size=8192)
    source._events = []
    drain_variable(fake_ring_reader(8192), producer, consumer, source._record, limit=100)
    return source._events


def test_source_decodes_owner_and_pair_records():
    source = DnsWireSource(ports=[53])
    warmed = []
    source.tracker.resolv_for_pid = lambda pid: warmed.append(pid)
    [event] = drain(source, [owner_record(4711), pair_record(7, 1, 0, ts=3 * MS, query_ts=MS)])
    assert warmed == [4711]  # read when the socket's first packet left, not later
    assert (event["pid"], event["comm"], event["server"], event["sport"], event["dport"]) == (4711, "app", SERVER,
                                                                                              40000, 53)
    assert event["ts"] == MS and event["latency_ns"] == 2 * MS and event["qname"] == "web.example.test"
    assert event["answered"] and event["rcode"] == "NOERROR"


def test_pair_ahead_of_an_earlier_query_takes_it_out_of_the_kernel_first():
    """AAAA (sent second) answered before A: A leaves the kernel map first, so AAAA keeps its flag."""
    source = DnsWireSource(ports=[53])
    a_query = build_message(7, 0x0100, "web.example.test", 1)
    entry = (MS, 4711, 4711, 0, 40000, 53, _addr(CLIENT), _addr(SERVER), len(a_query), 4, b"app" + bytes(13))
    source.inflight_map = FakeInflight([(77, 7, entry, a_query)])
    events = drain(source, [pair_record(8, 28, 1, ts=3 * MS, query_ts=MS + 50_000)])
    assert source.inflight_map.deleted == [0] and source.order["gap_sweeps"] == 1
    [aaaa] = events
    assert aaaa["qtype"] == "AAAA" and aaaa["same_port_pair"] and aaaa["pair_of"]["id"] == 7
    [a] = drain(source, [answer_record(7, 1, ts=4 * MS)])  # A's answer found no kernel entry: a packet
    assert a["qtype"] == "A" and not a["same_port_pair"] and a["latency_ns"] == 3 * MS
    assert source.tracker.stats()["inflight"] == 0


def test_pairs_in_send_order_need_no_sweep():
    source = DnsWireSource(ports=[53])
    source.inflight_map = FakeInflight([])
    events = drain(source, [pair_record(i, 1, i, ts=(i + 2) * MS, query_ts=(i + 1) * MS) for i in range(5)])
    assert len(events) == 5 and source.order["gap_sweeps"] == 0 and source.order["pairs"] == 5


def test_pending_includes_queries_the_kernel_still_holds():
    source = DnsWireSource(ports=[53])
    a_query = build_message(7, 0x0100, "web.example.test", 1)
    entry = (MS, 4711, 4712, 0, 40000, 53, _addr(CLIENT), _addr(SERVER), len(a_query), 4, b"app" + bytes(13))
    source.inflight_map = FakeInflight([(77, 7, entry, a_query)])
    [attempt] = source.pending()
    assert attempt["pending"] is True and attempt["answered"] is False and attempt["qname"] == "web.example.test"
    assert (attempt["pid"], attempt["tid"], attempt["id"], attempt["server"], attempt["sport"]) == (4711, 4712, 7,
                                                                                                    SERVER, 40000)
    assert source.inflight_map.deleted == []  # only read: the query is still the kernel's
    assert source.tracker.stats()["queries"] == 0


# --- the kernel clock ------------------------------------------------------------------------

WALL0, MONO0 = T0, 5_000 * MS


def test_source_converts_with_its_clock_and_follows_a_wall_clock_step():
    clocks = {"wall": WALL0, "mono": MONO0}
    clock = KernelClock(wall_ns=lambda: clocks["wall"], mono_ns=lambda: clocks["mono"])
    source = DnsWireSource(ports=[53], clock=clock)
    source.inflight_map = FakeInflight([])
    source.tick(WALL0)
    [before] = drain(source, [pair_record(7, 1, 0, ts=MONO0 + 3 * MS, query_ts=MONO0 + MS),
                              query_record(9, 1, 1, ts=MONO0 + 3 * MS)])  # 9: in flight in user space
    assert before["ts"] == WALL0 + MS and before["latency_ns"] == 2 * MS
    clocks["wall"] += 3600 * S  # an operator sets the clock an hour ahead
    assert source.tick(clocks["wall"]) == []  # 9 does not look an hour old
    [after, answer_of_9] = drain(source, [pair_record(8, 1, 2, ts=MONO0 + 5 * MS, query_ts=MONO0 + 4 * MS),
                                          answer_record(9, 1, ts=MONO0 + 6 * MS)])
    assert after["ts"] == WALL0 + 3600 * S + 4 * MS and clock.steps == 1
    assert answer_of_9["id"] == 9 and answer_of_9["latency_ns"] == 3 * MS  # not an hour


def test_tick_sweeps_kernel_held_queries_by_the_kernel_clock():
    clock = KernelClock(wall_ns=lambda: WALL0, mono_ns=lambda: MONO0)
    source = DnsWireSource(ports=[53], clock=clock)
    old, young = (build_message(msg_id, 0x0100, "web.example.test", 1) for msg_id in (7, 8))
    source.inflight_map = FakeInflight([
        (77, 7, (MONO0 - SWEEP_AGE_NS - MS, 4711, 4711, 0, 40000, 53, _addr(CLIENT), _addr(SERVER), len(old), 4,
                 b"app" + bytes(13)), old),
        (77, 8, (MONO0 - SWEEP_AGE_NS + MS, 4711, 4711, 1, 40000, 53, _addr(CLIENT), _addr(SERVER), len(young), 4,
                 b"app" + bytes(13)), young),
    ])
    assert source.tick(WALL0) == []
    assert source.inflight_map.deleted == [0] and source.order["swept"] == 1  # only the one older than the age
    [swept] = source.tracker.pending()
    assert swept["id"] == 7 and swept["ts"] == WALL0 - SWEEP_AGE_NS - MS
