"""DNS on the wire, per process: ``dnstrace trace dns``.

Kernel side: ``bpf/dns.bpf.c`` (cgroup_skb egress + ingress on the cgroup v2 root,
attached through BPF links). UDP queries wait in a bounded kernel hash map until their
answer arrives; the answer then writes ONE ring-buffer record holding both (a
"pair"). TCP, odd packets and answers whose query is not in the map come as one
record per packet, with the socket's owner process. The first packet of a new DNS
socket announces its owner (so its resolv.conf is read while it is alive).

User side, in two layers:

* ``DnsTracker`` (pure logic, fed decoded packets; unit-testable): parses the
  messages (``dnsparse``), matches answers to queries by socket cookie + id +
  question (one ring buffer keeps causal order; matching does not depend on
  arrival order beyond that), emits one ``dns`` event per query when its answer
  arrives or, from ``tick``, with ``answered=false`` once the timeout of the
  process's own resolv.conf has passed. It sets the detector flags
  ``same_port_pair``, ``tcp_fallback``, ``retransmit`` and keeps per-nameserver
  answered/unanswered counters. Every table is bounded; evictions are counted.
* ``DnsWireSource`` (the ``Source``): loads the program, reads the ring buffer
  from shared memory (``ringbuf.RingBufReader``; its fd goes to the runner's
  epoll), decodes each record with one ``struct`` unpack and feeds the tracker.
  Pairs arrive in answer order; the detector flags need send order, so every
  query carries its process's send sequence number (``qseq``): a pair whose
  process has earlier queries not seen yet first takes those out of the kernel map
  (a "gap sweep"; they become user-space in-flight queries, their answers come as
  packets). Once a second (``tick``), queries older than SWEEP_AGE_NS are taken
  out of the kernel map the same way, so timeouts and ``pending`` see them.

Hot path (DNS floods): one pair record per query. An exchange that repeats (same
socket, server, question and answer but for the id: a "flow") copies a cached
event template and only computes its time, id and flags (``DnsTracker._flow_event``).
A parsed message is cached under its bytes minus the id, address and comm texts
are cached. Wake-ups stay the kernel's default (only when the agent had read
everything): under a flood the agent lags a little and is not woken per record.
``bench/bench_dns_flood.py`` measures it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from dnstrace.bounded import BoundedDict
from dnstrace.columns import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_latency
from dnstrace.config import KEYS_BY_NAME
from dnstrace.enrich.resolvconf import DEFAULT_TIMEOUT_S, ResolvConf, ResolvConfCache
from dnstrace.errors import UsageError
from dnstrace.flow import Source
from dnstrace.kernel import load as bpfload
from dnstrace.kernel.clock import shared_clock
from dnstrace.kernel.ringbuf import RingBufReader
from dnstrace.kernel.stats import per_cpu_counters
from dnstrace.signals.base import EventFilter, Flag, SignalSpec, option
from dnstrace.signals.dns.parse import MalformedDns, parse_message, qtype_name, rcode_name, split_tcp_stream

# struct dns_event_hdr in bpf/dns.h (96 bytes, little endian, no padding).
EVENT_HDR = struct.Struct("<QQIIII16s16sHHHHBBBB16sI")
EVENT_HDR_SIZE = EVENT_HDR.size
# indexes in EVENT_HDR tuples
HDR_PID, HDR_QSEQ, HDR_PAYLOAD_LEN, HDR_CAP_LEN, HDR_PROTO, HDR_DIRECTION, HDR_KIND = 2, 5, 10, 11, 13, 14, 15
# struct dns_pair after its header: query time, query length, then the query's bytes, then the answer's.
PAIR_EXT = struct.Struct("<QH6x")
DNS_QUERY_CAPTURE = 192  # longest query the kernel pairs
PAIR_QUERY_START = EVENT_HDR_SIZE + PAIR_EXT.size
DIR_EGRESS, DIR_INGRESS = 0, 1
KIND_PACKET, KIND_PAIR, KIND_OWNER = 0, 1, 2
PROTO_TCP, PROTO_UDP = 6, 17
# Kernel counter indexes (DNS_CNT_* in bpf/dns.h).
KERNEL_COUNTERS = ("kernel_events", "ringbuf_lost", "kernel_malformed", "no_owner", "kernel_inflight_added",
                   "kernel_paired", "kernel_resent", "pairs_lost", "kernel_unpaired_full")
SWEEP_AGE_NS = 500_000_000  # tick: kernel-held queries older than this move to user space (min timeout 1 s)
GAP_SWEEP_BUDGET_NS = 20_000_000  # CPU per second for map reads restoring send order; beyond, order as it comes
ENOTSUPP = 524  # the kernel's internal "operation not supported" (no name in errno)
# struct dns_query (bpf/dns.h) up to its comm; the query bytes follow at QUERY_ENTRY_DATA
QUERY_ENTRY = struct.Struct("<QIIIHH16s16sHBx16s")
QUERY_ENTRY_HEAD = struct.Struct("<QIII")  # ts_ns, pid, tid, qseq
QUERY_ENTRY_DATA = QUERY_ENTRY.size
QUERY_KEY = struct.Struct("<QH")  # struct dns_query_key: cookie, id
PENDING_CACHE_NS = 200_000_000  # pending(): the kernel map is read at most this often

# A and AAAA "in parallel" on one port: sent from one socket within 100 ms. With a fast
# nameserver the first answer can arrive before the second query leaves even when both
# went out in one sendmmsg(), so wire timing alone cannot tell sendmmsg from sequential
# sends; resolv.conf's single-request (glibc sends one after the other) clears the flag.
SAME_PORT_WINDOW_NS = 100_000_000
TCP_FALLBACK_WINDOW_NS = 10_000_000_000  # a TCP query up to 10 s after a truncated UDP answer
RETRANSMIT_WINDOW_NS = 60_000_000_000
FLUSH_MAX_DRAINS = 16  # at shutdown, up to 16 x 65536 records
PARSE_CACHE_SIZE = 2048  # parsed messages kept (emptied when full): bounded, ~1 MiB at most
_MALFORMED = object()  # cached "this message did not parse"


@dataclass(slots=True)
class Packet:
    """One decoded ring-buffer record."""

    ts: int  # unix ns
    cookie: int
    pid: int
    tid: int
    comm: str
    family: int
    proto: int
    direction: int
    saddr: str
    daddr: str
    sport: int
    dport: int
    payload_len: int
    seq: int
    data: bytes


@dataclass(slots=True)
class Query:
    ts: int
    cookie: int
    pid: int
    tid: int
    comm: str
    server: str
    dport: int
    sport: int
    proto: str
    id: int
    qname: str
    qtype: int | None
    timeout_ns: int
    ns_index: int | None
    retransmit: bool = False
    same_port_pair: bool = False
    tcp_fallback: bool = False
    fallback_of: dict | None = None
    pair_of: dict | None = None
    qname_key: str = ""  # qname lower-cased: names match case-insensitively
    client: str = ""  # the source address: a TCP retry after TC is matched by flow, not by pid

    def event(self) -> dict:
        return {
            "kind": "dns", "ts": self.ts, "pid": self.pid, "tid": self.tid, "comm": self.comm,
            "qname": self.qname, "qtype": qtype_name(self.qtype), "server": self.server,
            "dport": self.dport, "sport": self.sport, "proto": self.proto, "id": self.id,
            "ns_index": self.ns_index, "retransmit": self.retransmit,
            "same_port_pair": self.same_port_pair, "tcp_fallback": self.tcp_fallback,
            "fallback_of": self.fallback_of, "pair_of": self.pair_of,
        }


class RecentMap:
    """Bounded map of recent keys, cheaper than an LRU on the flood path: two plain dicts
    (generations). Keys go into ``young``; when it holds ``limit // 2`` keys, ``old`` is
    dropped (its entries counted in ``evicted``) and ``young`` becomes ``old``. At least the
    last ``limit // 2`` keys put are always kept, never more than ``limit``."""

    __slots__ = ("young", "old", "half", "evicted")

    def __init__(self, limit: int):
        self.young: dict = {}
        self.old: dict = {}
        self.half = max(1, limit // 2)
        self.evicted = 0

    def get(self, key, default=None):
        value = self.young.get(key)
        if value is None:
            value = self.old.get(key, default)
        return value

    def put(self, key, value) -> None:
        young = self.young
        young[key] = value
        if len(young) >= self.half:
            self.age()

    def age(self) -> None:
        self.evicted += len(self.old)
        self.old = self.young
        self.young = {}

    def pop(self, key, default=None):
        value = self.young.pop(key, None)
        old_value = self.old.pop(key, None)
        if value is None:
            value = old_value
        return default if value is None else value

    def __len__(self) -> int:
        return len(self.young) + len(self.old)


class DnsTracker:
    """Queries in, events out: matching, timeouts, detector flags, counters."""

    def __init__(self, resolv_for_pid=None, max_inflight: int = 65536, max_servers: int = 1024,
                 default_timeout_s: float = DEFAULT_TIMEOUT_S):
        self.resolv_for_pid = resolv_for_pid or (lambda pid: None)
        self.default_timeout_ns = int(default_timeout_s * 1e9)
        # (cookie, id) -> [Query]; insertion order = send order, for timeouts.
        self.inflight: BoundedDict = BoundedDict(max_inflight)
        self.recent_sent = RecentMap(32768)  # (pid, id, qname, qtype) -> ts
        self.recent_pair = RecentMap(8192)  # (cookie, sport, qname, qtype) -> (ts, id, qtype)
        # (client address, server, qname, qtype) -> UDP query with a TC answer. By flow, not pid: a
        # forking server (dnsmasq) retries over TCP from a child, a threaded one from another thread.
        self.recent_tc = RecentMap(8192)
        self.tcp_streams: BoundedDict = BoundedDict(4096)  # (cookie, dir) -> [next seq, {starts}]
        self.servers: BoundedDict = BoundedDict(max_servers)  # (addr, port) -> [answered, unanswered]
        self._parsed: dict = {}  # (message minus id, length, direction) -> DnsMessage | _MALFORMED
        # kernel-paired UDP exchanges that repeat (floods): (cookie, pid, query and answer minus ids, lengths)
        # -> what their events share; emptied every tick (resolv.conf may change) and when full
        self._flows: dict = {}
        self.flow_events = 0
        self._resolv_by_pid: BoundedDict = BoundedDict(4096)  # pid -> (checked_ts, ResolvConf | None)
        self.counters = dict(packets=0, queries=0, answers=0, unanswered=0, malformed=0,
                             unmatched_answers=0, ignored=0, tcp_continuations=0)

    # --- input ---------------------------------------------------------------------------

    def packet(self, pkt: Packet) -> list[dict]:
        """Events completed by this packet (an answer matching a query), usually none or one."""
        if pkt.proto != PROTO_TCP:
            if pkt.direction == DIR_INGRESS:
                event = self.udp_answer(pkt.ts, pkt.cookie, pkt.data, pkt.payload_len)
                return [event] if event is not None else []
            self.counters["packets"] += 1
            self._message(pkt, pkt.data, pkt.payload_len)
            return []
        self.counters["packets"] += 1
        events = []
        for data, total in self._tcp_messages(pkt):
            event = self._message(pkt, data, total)
            if event is not None:
                events.append(event)
        return events

    def udp_answer(self, ts: int, cookie: int, data: bytes, total: int) -> dict | None:
        """A UDP datagram from a DNS port, the flood-sized half of the traffic: an answer needs
        only its socket, time and bytes, so it skips building a Packet. The event, if it answers."""
        self.counters["packets"] += 1
        parsed = self._parse(data, total, True)
        if parsed is None:
            return None
        msg, qname_key = parsed
        if not msg.qr:
            self.counters["ignored"] += 1
            return None
        return self._answer(ts, cookie, msg, (data[0] << 8) | data[1], qname_key)

    def _parse(self, data: bytes, total: int, ingress: bool) -> tuple | None:
        """(DnsMessage, lower-cased qname) or None when malformed (counted).

        Through a cache keyed by everything but the id: floods repeat their questions."""
        key = (data[2:], total, ingress)
        parsed = self._parsed.get(key)
        if parsed is None:
            try:
                msg = parse_message(data, total, want_answers=ingress)
                parsed = (msg, msg.qname.lower() if msg.qname is not None else None)
            except MalformedDns:
                parsed = _MALFORMED
            if len(self._parsed) >= PARSE_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[key] = parsed
        if parsed is _MALFORMED:
            self.counters["malformed"] += 1
            return None
        return parsed

    def _message(self, pkt: Packet, data: bytes, total: int) -> dict | None:
        ingress = pkt.direction == DIR_INGRESS
        parsed = self._parse(data, total, ingress)
        if parsed is None:
            return None
        msg, qname_key = parsed
        msg_id = (data[0] << 8) | data[1]
        if not ingress:
            if msg.qr or qname_key is None:
                self.counters["ignored"] += 1  # e.g. a server answering from a DNS port
                return None
            self._query(pkt, msg, msg_id, qname_key)
            return None
        if not msg.qr:
            self.counters["ignored"] += 1
            return None
        return self._answer(pkt.ts, pkt.cookie, msg, msg_id, qname_key)

    def _tcp_messages(self, pkt: Packet) -> list[tuple[bytes, int]]:
        """Messages starting in this segment; continuation and re-sent segments are skipped."""
        key = (pkt.cookie, pkt.direction)
        state = self.tcp_streams.get(key)
        if state is not None and pkt.seq != state[0]:
            # the rest of a message begun earlier, or a segment sent again (its seq in state[1])
            self.counters["tcp_continuations"] += 1
            return []
        messages = split_tcp_stream(pkt.data, pkt.payload_len)
        if not messages:
            return []
        last_start, _, last_len = messages[-1]
        next_seq = (pkt.seq + last_start + last_len) & 0xFFFFFFFF
        starts = state[1] if state else set()
        if len(starts) < 64:
            starts.add(pkt.seq)
        self.tcp_streams.put(key, [next_seq, starts])
        return [(data, length) for _, data, length in messages]

    def _resolv(self, pid: int, now_ns: int) -> ResolvConf | None:
        cached = self._resolv_by_pid.get(pid)
        if cached and now_ns - cached[0] < 10_000_000_000:
            return cached[1]
        conf = self.resolv_for_pid(pid) if pid else None
        self._resolv_by_pid.put(pid, (now_ns, conf))
        return conf

    def resolv_conf_of(self, pid: int) -> ResolvConf | None:
        """The resolv.conf seen when ``pid`` sent its queries (still known after it exited)."""
        cached = self._resolv_by_pid.get(pid)
        if cached is not None and cached[1] is not None:
            return cached[1]
        return self.resolv_for_pid(pid) if pid else None

    def warm(self, pid: int, ts: int) -> None:
        """A new DNS socket of ``pid``: read its resolv.conf now, while the process lives."""
        self._resolv(pid, ts)

    def _query(self, pkt: Packet, msg, msg_id: int, qname_key: str) -> None:
        query = self._make_query(pkt.ts, pkt.cookie, pkt.pid, pkt.tid, pkt.comm, pkt.daddr, pkt.dport, pkt.sport,
                                 "tcp" if pkt.proto == PROTO_TCP else "udp", msg, msg_id, qname_key, pkt.saddr)
        key = (pkt.cookie, msg_id)
        pending = self.inflight.get(key)
        if pending is None:
            self.inflight.put(key, [query])
        else:
            pending.append(query)
            del pending[:-8]  # a socket re-sending one id forever cannot grow this

    def _make_query(self, ts: int, cookie: int, pid: int, tid: int, comm: str, server: str, dport: int, sport: int,
                    proto: str, msg, msg_id: int, qname_key: str, client: str = "") -> Query:
        """A query seen leaving (its flags from the queries seen before it), not yet in flight."""
        self.counters["queries"] += 1
        conf = self._resolv(pid, ts)
        query = Query(
            ts, cookie, pid, tid, comm, server, dport, sport, proto, msg_id, msg.qname, msg.qtype,
            int(conf.timeout_s * 1e9) if conf else self.default_timeout_ns,
            # `in` first: server_index raises inside for unlisted servers (slow in floods)
            conf.server_index(server) if conf and server in conf.nameservers else None,
            qname_key=qname_key, client=client,
        )
        sent_key = (pid, msg_id, qname_key, msg.qtype)
        previous = self.recent_sent.get(sent_key)
        if previous is not None and 0 <= ts - previous < RETRANSMIT_WINDOW_NS:
            query.retransmit = True
        self.recent_sent.put(sent_key, ts)
        if proto == "tcp":
            tc_query = self.recent_tc.pop((client, server, qname_key, msg.qtype), None)
            if tc_query is not None and ts - tc_query.ts < TCP_FALLBACK_WINDOW_NS:
                query.tcp_fallback = True
                query.fallback_of = {"ts": tc_query.ts, "id": tc_query.id, "server": tc_query.server,
                                     "sport": tc_query.sport}
        elif msg.qtype in (1, 28) and not (conf and conf.single_request):
            self._pair_check(query, qname_key)
        return query

    def pair(self, query_ts: int, answer_ts: int, cookie: int, pid: int, tid: int, comm: str, family: int,
             client: str, client_port: int, server: str, server_port: int, query_data: bytes, query_len: int,
             answer_data: bytes, answer_len: int, flow_key: tuple | None = None) -> list[dict]:
        """A UDP query and its answer, paired by the kernel (socket cookie + id): its event.

        The fast path makes the event without the in-flight table: the answer belongs to this
        send, the last of its id on its socket (an earlier send of the id, in user space since
        it was re-sent or swept, stays in flight until its own answer or timeout). When the
        pairing is not plain (the answer's question differs, truncation, a message does not
        parse), both go through the general packet path instead."""
        msg_id = (query_data[0] << 8) | query_data[1] if len(query_data) >= 2 else -1
        if len(query_data) >= 12:
            if flow_key is None:
                flow_key = (cookie, pid, server, server_port, client_port, query_data[2:], query_len,
                            answer_data[2:], answer_len)
            flow = self._flows.get(flow_key)
            if flow is None:
                flow = self._new_flow(flow_key, query_ts, cookie, pid, comm, client_port, server, server_port,
                                      query_data, query_len, answer_data, answer_len)
            if flow is not False:
                return [self._flow_event(flow, query_ts, answer_ts, pid, tid, msg_id, cookie, client_port)]
        query = Packet(query_ts, cookie, pid, tid, comm, family, PROTO_UDP, DIR_EGRESS, client, server,
                       client_port, server_port, query_len, 0, query_data)
        answer = Packet(answer_ts, cookie, pid, tid, comm, family, PROTO_UDP, DIR_INGRESS, server, client,
                        server_port, client_port, answer_len, 0, answer_data)
        return self.packet(query) + self.packet(answer)

    def _new_flow(self, flow_key, query_ts, cookie, pid, comm, client_port, server, server_port,
                  query_data, query_len, answer_data, answer_len):
        """What every event of this exchange shares, or False when it needs the general path."""
        malformed_before = self.counters["malformed"]
        asked = self._parse(query_data, query_len, False)
        answered = self._parse(answer_data, answer_len, True) if asked is not None else None
        self.counters["malformed"] = malformed_before  # the general path counts them
        if answered is None:
            return False
        qmsg, qname_key = asked
        amsg, answer_key = answered
        if (qmsg.qr or qname_key is None or not amsg.qr or amsg.tc
                or (answer_key is not None and (answer_key != qname_key or amsg.qtype != qmsg.qtype))):
            return False  # odd, or truncated (TCP fallback bookkeeping): the general path
        conf = self._resolv(pid, query_ts)
        counts = self.servers.get((server, server_port))
        if counts is None:
            counts = [0, 0]
            self.servers.put((server, server_port), counts)
        template = {
            "kind": "dns", "ts": 0, "pid": pid, "tid": 0, "comm": comm,
            "qname": qmsg.qname, "qtype": qtype_name(qmsg.qtype), "server": server,
            "dport": server_port, "sport": client_port, "proto": "udp", "id": 0,
            # `in` first: server_index raises inside for unlisted servers (slow in floods)
            "ns_index": conf.server_index(server) if conf and server in conf.nameservers else None,
            "retransmit": False, "same_port_pair": False, "tcp_fallback": False,
            "fallback_of": None, "pair_of": None,
            "rcode": rcode_name(amsg.rcode), "tc": amsg.tc, "ancount": amsg.ancount,
            "latency_ns": 0, "answered": True, "answers": None,
        }
        check_pair = qmsg.qtype in (1, 28) and not (conf and conf.single_request)
        flow = (template, qname_key, qmsg.qtype, check_pair, counts, tuple(amsg.answers or ()))
        if len(self._flows) >= PARSE_CACHE_SIZE:
            self._flows.clear()
        self._flows[flow_key] = flow
        return flow

    def _flow_event(self, flow, ts: int, answer_ts: int, pid: int, tid: int, msg_id: int, cookie: int,
                    sport: int) -> dict:
        """The event of one kernel-paired exchange: the general path's flags, inlined (the flood path)."""
        template, qname_key, qtype, check_pair, counts, answers = flow
        self.flow_events += 1  # each one packets += 2, queries += 1, answers += 1 (added up in stats)
        counts[0] += 1
        event = template.copy()
        event["ts"] = ts
        event["tid"] = tid
        event["id"] = msg_id
        latency_ns = answer_ts - ts
        event["latency_ns"] = latency_ns if latency_ns > 0 else 0
        event["answers"] = list(answers) if answers else []
        recent_sent = self.recent_sent  # RecentMap get/put, inlined
        sent_key = (pid, msg_id, qname_key, qtype)
        young = recent_sent.young
        previous = young.get(sent_key)
        if previous is None:
            previous = recent_sent.old.get(sent_key)
        if previous is not None and 0 <= ts - previous < RETRANSMIT_WINDOW_NS:
            event["retransmit"] = True
        young[sent_key] = ts
        if len(young) >= recent_sent.half:
            recent_sent.age()
        if check_pair:
            recent_pair = self.recent_pair
            partner = recent_pair.get((cookie, sport, qname_key, 28 if qtype == 1 else 1))
            if partner is not None and ts - partner[0] <= SAME_PORT_WINDOW_NS:
                event["same_port_pair"] = True
                event["pair_of"] = {"ts": partner[0], "id": partner[1], "qtype": qtype_name(partner[2])}
            recent_pair.put((cookie, sport, qname_key, qtype), (ts, msg_id, qtype))
        return event

    def _pair_check(self, query: Query, qname_key: str) -> None:
        """Default glibc: A and AAAA leave one socket and port together (seed 004's precondition)."""
        other_type = 28 if query.qtype == 1 else 1
        partner = self.recent_pair.get((query.cookie, query.sport, qname_key, other_type))
        if partner is not None and query.ts - partner[0] <= SAME_PORT_WINDOW_NS:
            query.same_port_pair = True  # on the later query of the pair: its partner may be out already
            query.pair_of = {"ts": partner[0], "id": partner[1], "qtype": qtype_name(partner[2])}
        self.recent_pair.put((query.cookie, query.sport, qname_key, query.qtype), (query.ts, query.id, query.qtype))

    def _answer(self, ts: int, cookie: int, msg, msg_id: int, wanted: str | None) -> dict | None:
        key = (cookie, msg_id)
        pending = self.inflight.get(key)
        query = None
        if pending:
            for index, candidate in enumerate(pending):
                if wanted is None or (candidate.qname_key == wanted and candidate.qtype == msg.qtype):
                    query = pending.pop(index)
                    break
            if not pending:
                del self.inflight[key]
        if query is None:
            self.counters["unmatched_answers"] += 1
            return None
        return self._complete(query, ts, msg)

    def _complete(self, q: Query, ts: int, msg) -> dict:
        """The event of query ``q`` answered by ``msg`` at ``ts``."""
        self.counters["answers"] += 1
        counts = self.servers.get((q.server, q.dport))  # _server_count inlined: hot path
        if counts is None:
            self._server_count(q, answered=True)
        else:
            counts[0] += 1
        if msg.tc and q.proto == "udp":
            self.recent_tc.put((q.client, q.server, q.qname_key, q.qtype), q)
        latency_ns = ts - q.ts
        return {
            "kind": "dns", "ts": q.ts, "pid": q.pid, "tid": q.tid, "comm": q.comm,
            "qname": q.qname, "qtype": qtype_name(q.qtype), "server": q.server,
            "dport": q.dport, "sport": q.sport, "proto": q.proto, "id": q.id,
            "ns_index": q.ns_index, "retransmit": q.retransmit,
            "same_port_pair": q.same_port_pair, "tcp_fallback": q.tcp_fallback,
            "fallback_of": q.fallback_of, "pair_of": q.pair_of,
            "rcode": rcode_name(msg.rcode), "tc": msg.tc, "ancount": msg.ancount,
            "latency_ns": latency_ns if latency_ns > 0 else 0, "answered": True,
            "answers": list(msg.answers) if msg.answers else [],  # parsed messages are cached: copy
        }

    def _server_count(self, query: Query, answered: bool) -> None:
        key = (query.server, query.dport)
        counts = self.servers.get(key)
        if counts is None:
            counts = [0, 0]
            self.servers.put(key, counts)
        counts[0 if answered else 1] += 1

    # --- time ------------------------------------------------------------------------------

    def expire(self, now_ns: int) -> list[dict]:
        """Queries whose resolver timeout passed without an answer -> ``answered=false`` events."""
        self._flows.clear()  # re-read what they hold (resolv.conf, server counters) once a second
        events = []
        expired_keys = []
        for key, pending in self.inflight.items():
            if pending and now_ns - pending[0].ts < 1_000_000_000:
                break  # entries are in send order; nothing newer can have timed out (min timeout 1 s)
            keep = []
            for query in pending:
                if now_ns - query.ts >= query.timeout_ns:
                    self.counters["unanswered"] += 1
                    self._server_count(query, answered=False)
                    event = query.event()
                    event.update(rcode=None, tc=False, ancount=0, latency_ns=None, answered=False,
                                 timeout_ns=query.timeout_ns, answers=[])
                    events.append(event)
                else:
                    keep.append(query)
            if keep:
                pending[:] = keep
            else:
                expired_keys.append(key)
        for key in expired_keys:
            del self.inflight[key]
        return events

    def pending(self) -> list[dict]:
        """In-flight queries as unanswered-so-far attempts (for the lookup join)."""
        attempts = []
        for pending in self.inflight.values():
            for query in pending:
                event = query.event()
                event.update(rcode=None, tc=False, ancount=0, latency_ns=None, answered=False,
                             answers=[], pending=True)
                attempts.append(event)
        return attempts

    def query_event(self, pkt: Packet) -> dict | None:
        """A query not handed to the tracker yet (held by the kernel) as a pending attempt; no state changes."""
        if len(pkt.data) < 12:
            return None
        malformed_before = self.counters["malformed"]
        parsed = self._parse(pkt.data, pkt.payload_len, False)  # cached: floods repeat their questions
        self.counters["malformed"] = malformed_before  # counted when the query itself is handled
        if parsed is None or parsed[0].qr or parsed[0].qname is None:
            return None
        msg = parsed[0]
        conf = self.resolv_conf_of(pkt.pid)
        query = Query(pkt.ts, pkt.cookie, pkt.pid, pkt.tid, pkt.comm, pkt.daddr, pkt.dport, pkt.sport, "udp",
                      (pkt.data[0] << 8) | pkt.data[1], msg.qname, msg.qtype,
                      int(conf.timeout_s * 1e9) if conf else self.default_timeout_ns,
                      conf.server_index(pkt.daddr) if conf and pkt.daddr in conf.nameservers else None)
        event = query.event()
        event.update(rcode=None, tc=False, ancount=0, latency_ns=None, answered=False, answers=[], pending=True)
        return event

    def stats(self) -> dict:
        stats = dict(self.counters)
        stats["packets"] += 2 * self.flow_events
        stats["queries"] += self.flow_events
        stats["answers"] += self.flow_events
        stats["inflight"] = sum(len(p) for p in self.inflight.values())
        stats["inflight_evicted"] = self.inflight.evicted
        stats["servers"] = {_server_name(server, port): {"answered": c[0], "unanswered": c[1]}
                            for (server, port), c in self.servers.items()}
        return stats


def _server_name(server: str, port: int) -> str:
    return f"[{server}]:{port}" if ":" in server else f"{server}:{port}"


# --- kernel plumbing ---------------------------------------------------------------------------


class TextCache(dict):
    """Raw bytes -> text (addresses, comms), bounded: they repeat (nameservers, clients, programs).

    ``convert`` runs only on a miss; the cache empties itself when full."""

    def __init__(self, convert, limit: int = 4096):
        super().__init__()
        self.convert = convert
        self.limit = limit

    def __missing__(self, raw: bytes) -> str:
        text = self.convert(raw)
        if len(self) >= self.limit:
            self.clear()
        self[raw] = text
        return text


def _ipv4_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def _ipv6_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def _comm_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class KernelInflight:
    """The kernel's in-flight query map, read with BPF_MAP_LOOKUP_BATCH into buffers allocated once
    (bcc's batch helpers allocate max_entries-sized buffers on every call)."""

    def __init__(self, table, capacity: int):
        from bcc.libbcc import lib  # bcc is imported lazily everywhere

        self.lib = lib
        self.fd = table.map_fd
        self.key_size = ctypes.sizeof(table.Key)
        self.value_size = ctypes.sizeof(table.Leaf)
        self.capacity = capacity
        self.keys = (ctypes.c_char * (self.key_size * capacity))()
        self.values = (ctypes.c_char * (self.value_size * capacity))()
        self.batch_ok = True

    def read(self) -> int:
        """Copy every entry into ``keys``/``values``; returns how many."""
        if not self.batch_ok:
            return self._read_one_by_one()
        total = 0
        batch, count = ctypes.c_uint(0), ctypes.c_uint(0)
        keys, values = ctypes.addressof(self.keys), ctypes.addressof(self.values)
        while total < self.capacity:
            count.value = self.capacity - total
            result = self.lib.bpf_lookup_batch(self.fd, ctypes.byref(batch) if total else None, ctypes.byref(batch),
                                               keys + self.key_size * total, values + self.value_size * total,
                                               ctypes.byref(count))
            error = ctypes.get_errno()
            total += count.value
            if result != 0:
                if error not in (errno.ENOENT, 0):
                    if total == 0 and error in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP):
                        self.batch_ok = False  # an old kernel: no batch operations
                        return self._read_one_by_one()
                    raise OSError(error, f"reading the DNS in-flight map: {os.strerror(error)}")
                break
            if count.value == 0:
                break
        return total

    def _read_one_by_one(self) -> int:
        key, next_key = ctypes.create_string_buffer(self.key_size), ctypes.create_string_buffer(self.key_size)
        total = 0
        start = None
        while total < self.capacity:
            if self.lib.bpf_get_next_key(self.fd, start, next_key) != 0:
                break
            ctypes.memmove(key, next_key, self.key_size)
            start = key
            if self.lib.bpf_lookup_elem(self.fd, key, ctypes.addressof(self.values) + self.value_size * total) == 0:
                ctypes.memmove(ctypes.addressof(self.keys) + self.key_size * total, key, self.key_size)
                total += 1
        return total

    def delete(self, index: int) -> bool:
        """Delete entry ``index`` of the last read; False when it was gone (its answer took it)."""
        return self.lib.bpf_delete_elem(self.fd, ctypes.addressof(self.keys) + self.key_size * index) == 0


class DnsWireSource(Source):
    name = "dns"

    def __init__(self, ports=(53,), ringbuf_pages: int = 4096, max_inflight: int = 65536,
                 kernel_inflight: int = 32768):
        ports = sorted({int(p) for p in ports})
        for port in ports:
            if not 0 < port < 65536:
                raise UsageError(f"not a port number: {port}")
        if not ports or len(ports) > 64:
            raise UsageError("give between 1 and 64 DNS ports")
        self.ports = ports
        self.ringbuf_pages = ringbuf_pages
        self.kernel_inflight = kernel_inflight
        self.resolv_cache = ResolvConfCache()
        self.tracker = DnsTracker(resolv_for_pid=self.resolv_cache.for_pid, max_inflight=max_inflight)
        self.bpf = None
        self.reader = None
        self.links: list[bpfload.CgroupLink] = []
        self._offset_ns = 0
        self._ipv4 = TextCache(_ipv4_text)  # separate: an IPv6 address can have the bytes of an IPv4 one
        self._ipv6 = TextCache(_ipv6_text)
        self._comms = TextCache(_comm_text)
        self._events: list[dict] = []  # filled by _record during a poll
        self.records = 0  # ring buffer records decoded (kept after close)
        self.records_malformed = 0
        self.inflight_map = None  # the kernel's in-flight query map (bcc table)
        self._next_qseq: dict[int, int] = {}  # pid -> the send sequence number expected next
        self._gap_budget_ns = GAP_SWEEP_BUDGET_NS
        self._pending_cache: tuple[int, list[dict]] = (0, [])
        self._closing_counters: dict = {}  # kernel counters read at close
        self.order = dict(gap_sweeps=0, gap_sweeps_skipped=0, swept=0, pairs=0)

    def start(self) -> None:
        defines = f"#define RINGBUF_PAGES {self.ringbuf_pages}\n#define INFLIGHT_MAX {self.kernel_inflight}\n"
        self.bpf = bpfload.load(Path(__file__).with_name("dns.bpf.c"), text_prefix=defines)
        ports = self.bpf["dns_ports"]
        for port in self.ports:
            ports[ctypes.c_ushort(port)] = ctypes.c_ubyte(1)
        root = bpfload.find_cgroup2_root()
        egress = self.bpf.load_func("dns_egress", self.bpf.CGROUP_SKB)
        ingress = self.bpf.load_func("dns_ingress", self.bpf.CGROUP_SKB)
        self.reader = RingBufReader(self.bpf["events"].map_fd)
        self.inflight_map = KernelInflight(self.bpf["inflight"], self.kernel_inflight)
        self._offset_ns = shared_clock().offset_ns
        self.links.append(bpfload.CgroupLink(egress.fd, root, bpfload.BPF_CGROUP_INET_EGRESS))
        self.links.append(bpfload.CgroupLink(ingress.fd, root, bpfload.BPF_CGROUP_INET_INGRESS))

    def fds(self) -> list[int]:
        return [self.reader.fd] if self.reader is not None else []

    def decode(self, area, offset: int, length: int) -> Packet:
        """One ring buffer record (``dns_event_hdr`` + captured payload) -> a Packet."""
        if length < EVENT_HDR_SIZE:
            raise ValueError("record shorter than its header")  # the reader counts it as malformed
        return self._packet(EVENT_HDR.unpack_from(area, offset), area, offset + EVENT_HDR_SIZE,
                            length - EVENT_HDR_SIZE)

    def _packet(self, header: tuple, area, data_start: int, data_room: int) -> Packet:
        (ts, cookie, pid, tid, seq, _qseq, saddr, daddr, sport, dport, payload_len, cap_len,
         family, proto, direction, _kind, comm, _reserved) = header
        addresses = self._ipv4 if family == 4 else self._ipv6
        return Packet(ts + self._offset_ns, cookie, pid, tid, self._comms[comm], family, proto, direction,
                      addresses[saddr], addresses[daddr], sport, dport, payload_len, seq,
                      area[data_start:data_start + min(cap_len, data_room)])

    def _record(self, area, offset: int, length: int) -> None:
        """Feed one ring buffer record to the tracker; its events go to ``self._events``."""
        if length < EVENT_HDR_SIZE:
            raise ValueError("record shorter than its header")
        header = EVENT_HDR.unpack_from(area, offset)
        kind = header[HDR_KIND]
        if kind == KIND_PAIR:
            self._pair(header, area, offset, length)
            return
        if kind == KIND_OWNER:
            self.tracker.warm(header[HDR_PID], header[0] + self._offset_ns)
            return
        if header[HDR_DIRECTION] == DIR_INGRESS:
            if header[HDR_PROTO] == PROTO_UDP:
                start = offset + EVENT_HDR_SIZE
                cap_len = header[HDR_CAP_LEN]
                if cap_len > length - EVENT_HDR_SIZE:
                    cap_len = length - EVENT_HDR_SIZE
                event = self.tracker.udp_answer(header[0] + self._offset_ns, header[1],
                                                area[start:start + cap_len], header[HDR_PAYLOAD_LEN])
                if event is not None:
                    self._events.append(event)
                return
        else:
            self._in_order(header[HDR_PID], header[HDR_QSEQ])
        events = self.tracker.packet(self._packet(header, area, offset + EVENT_HDR_SIZE, length - EVENT_HDR_SIZE))
        if events:
            self._events.extend(events)

    def _pair(self, header: tuple, area, offset: int, length: int) -> None:
        """A kernel-paired UDP query + answer: one event. The flood's hot path: an exchange seen
        before (same socket, server, question and answer but for the id) only copies its event."""
        if length < PAIR_QUERY_START:
            raise ValueError("pair record shorter than its header")
        (ts, cookie, pid, tid, _seq, qseq, saddr, daddr, sport, dport, payload_len, cap_len,
         family, _proto, _direction, _kind, comm, _reserved) = header
        if self._next_qseq.get(pid) == qseq:
            self._next_qseq[pid] = qseq + 1
        else:
            self._in_order(pid, qseq)
        query_ts, query_len = PAIR_EXT.unpack_from(area, offset + EVENT_HDR_SIZE)
        if query_len > DNS_QUERY_CAPTURE or PAIR_QUERY_START + query_len > length:
            raise ValueError("pair record shorter than its query")
        query_start = offset + PAIR_QUERY_START
        answer_start = query_start + query_len
        if cap_len > length - PAIR_QUERY_START - query_len:
            cap_len = length - PAIR_QUERY_START - query_len
        offset_ns = self._offset_ns
        self.order["pairs"] += 1
        tracker = self.tracker
        msg_id = (area[query_start] << 8) | area[query_start + 1]
        # the record describes the answer: its source is the server, its destination the client
        flow_key = (cookie, pid, saddr, sport, dport, area[query_start + 2:query_start + query_len], query_len,
                    area[answer_start + 2:answer_start + cap_len], payload_len)
        flow = tracker._flows.get(flow_key)
        if flow is not None and query_len >= 12:
            self._events.append(tracker._flow_event(flow, query_ts + offset_ns, ts + offset_ns, pid, tid, msg_id,
                                                    cookie, dport))
            return
        addresses = self._ipv4 if family == 4 else self._ipv6
        self._events.extend(tracker.pair(
            query_ts + offset_ns, ts + offset_ns, cookie, pid, tid, self._comms[comm], family,
            addresses[daddr], dport, addresses[saddr], sport,
            area[query_start:query_start + query_len], query_len,
            area[answer_start:answer_start + cap_len], payload_len, flow_key))

    # --- send order ------------------------------------------------------------------------

    def _in_order(self, pid: int, qseq: int) -> None:
        """Before a query numbered ``qseq`` of ``pid`` is handled: earlier ones still in the kernel
        map (sent before, unanswered so far) are taken out first, so flags see send order."""
        next_qseq = self._next_qseq
        expected = next_qseq.get(pid, 0)  # the kernel numbers a process's queries from 0
        if qseq != expected:
            if qseq < expected:
                if expected - qseq < 1 << 20:
                    return  # an older query arriving late (taken by a gap sweep that raced its answer)
            elif self._gap_budget_ns > 0:
                started = time.perf_counter_ns()
                self.order["gap_sweeps"] += 1
                self._sweep(pid=pid, below_qseq=qseq)
                self._gap_budget_ns -= time.perf_counter_ns() - started
            else:
                self.order["gap_sweeps_skipped"] += 1
        if len(next_qseq) >= 65536:
            next_qseq.clear()  # bounded; forgetting only loses ordering hints
        next_qseq[pid] = qseq + 1

    def _kernel_queries(self, max_ts: int | None = None, pid: int | None = None, below_qseq: int = 0,
                        take: bool = False) -> list[Packet]:
        """Queries held in the kernel map: those sent at or before ``max_ts`` (monotonic ns), or
        those of ``pid`` numbered below ``below_qseq``, or all. ``take`` deletes them from the map
        (one that its answer took meanwhile is left out: its pair record follows in the ring).
        Each packet's ``seq`` holds the query's send sequence number."""
        inflight = self.inflight_map
        if inflight is None:
            return []
        count = inflight.read()
        values, keys = inflight.values, inflight.keys
        value_size, key_size = inflight.value_size, inflight.key_size
        head = QUERY_ENTRY_HEAD.unpack_from
        packets = []
        for index in range(count):
            offset = index * value_size
            ts, entry_pid, _tid, qseq = head(values, offset)
            if max_ts is not None and ts > max_ts:
                continue
            if pid is not None and (entry_pid != pid or qseq >= below_qseq):
                continue
            if take and not inflight.delete(index):
                continue
            (ts, entry_pid, tid, qseq, sport, dport, saddr, daddr, length, family,
             comm) = QUERY_ENTRY.unpack_from(values, offset)
            length = min(length, DNS_QUERY_CAPTURE)
            cookie = QUERY_KEY.unpack_from(keys, index * key_size)[0]
            addresses = self._ipv4 if family == 4 else self._ipv6
            data_start = offset + QUERY_ENTRY_DATA
            packets.append(Packet(ts + self._offset_ns, cookie, entry_pid, tid, self._comms[comm], family, PROTO_UDP,
                                  DIR_EGRESS, addresses[saddr], addresses[daddr], sport, dport, length, qseq,
                                  bytes(values[data_start:data_start + length])))
        return packets

    def _sweep(self, max_ts: int | None = None, pid: int | None = None, below_qseq: int = 0) -> None:
        """Take kernel-held queries into the tracker (in send order): they become user-space
        in-flight queries; their answers, if any come, arrive as packets."""
        taken = self._kernel_queries(max_ts, pid, below_qseq, take=True)
        self.order["swept"] += len(taken)
        taken.sort(key=lambda packet: packet.ts)
        next_qseq = self._next_qseq
        for packet in taken:
            expected = next_qseq.get(packet.pid)
            if expected is None or expected <= packet.seq:
                next_qseq[packet.pid] = packet.seq + 1
            packet.seq = 0  # UDP: no TCP sequence number
            self.tracker.packet(packet)  # a query: no event until its answer or timeout

    def poll(self) -> list[dict]:
        if self.reader is None:
            return []
        self._events = []
        self.reader.drain_with(self._record)
        events, self._events = self._events, []
        return events

    def flush(self) -> list[dict]:
        """At shutdown: the rest of the ring buffer (one poll stops after DEFAULT_DRAIN_LIMIT records)."""
        events: list[dict] = []
        for _ in range(FLUSH_MAX_DRAINS):  # bounded: the kernel keeps writing while we read
            if self.reader is None:
                break
            read_before = self.reader.records + self.reader.malformed
            events.extend(self.poll())
            if self.reader.records + self.reader.malformed == read_before:
                break
        self._sweep()  # queries still unanswered: in flight in user space
        return events

    def tick(self, now_ns: int) -> list[dict]:
        self._gap_budget_ns = GAP_SWEEP_BUDGET_NS
        self._sweep(max_ts=time.monotonic_ns() - SWEEP_AGE_NS)  # bpf_ktime_get_ns() is CLOCK_MONOTONIC
        return self.tracker.expire(now_ns)

    def pending(self) -> list[dict]:
        """In-flight queries, user space's and the kernel map's, as unanswered-so-far attempts."""
        now = time.monotonic_ns()
        read_at, kernel_held = self._pending_cache
        if now - read_at >= PENDING_CACHE_NS:
            kernel_held = []
            for packet in self._kernel_queries():
                event = self.tracker.query_event(packet)
                if event is not None:
                    kernel_held.append(event)
            self._pending_cache = (now, kernel_held)
        return self.tracker.pending() + kernel_held

    def kernel_counters(self) -> dict:
        if self.bpf is None:
            return {}
        return per_cpu_counters(self.bpf["counters"], KERNEL_COUNTERS)

    def stats(self) -> dict:
        stats = self.tracker.stats()
        kernel = self.kernel_counters() if self.bpf is not None else dict(self._closing_counters)
        if kernel:
            stats["malformed"] += kernel.pop("kernel_malformed")
            stats.update(kernel)
        if self.reader is not None:
            self.records = self.reader.records
            self.records_malformed = self.reader.malformed
        stats["records"] = self.records
        stats.update(self.order)
        if kernel:
            held = self.inflight_map.read() if self.inflight_map is not None else kernel.pop("kernel_inflight", 0)
            stats["kernel_inflight"] = held
            # what went in and never came out by a known way (0 unless the kernel map lost entries)
            stats["kernel_inflight_evicted"] = max(0, kernel["kernel_inflight_added"] - kernel["kernel_paired"]
                                                   - kernel["kernel_resent"] - self.order["swept"] - held)
        stats["malformed"] += self.records_malformed
        stats["resolv_conf_reads"] = self.resolv_cache.reads
        return stats

    def close(self) -> None:
        for link in self.links:
            link.close()
        self.links = []
        if self.bpf is not None:  # kept for stats() after close
            self._closing_counters = self.kernel_counters()
            self._closing_counters["kernel_inflight"] = self.inflight_map.read() if self.inflight_map else 0
        if self.reader is not None:
            self.records, self.records_malformed = self.reader.records, self.reader.malformed
            self.reader.close()
            self.reader = None
        self.inflight_map = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


# --- trace target -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsPortOptions:
    """The ports traced as DNS: ``agent.dns_ports`` (its default under `dnstrace trace`) plus ``--port``."""

    dns_ports: tuple[int, ...] = tuple(KEYS_BY_NAME["agent.dns_ports"].default)
    ports: tuple[int, ...] = option((), Flag("--port", "also trace this port as DNS (repeatable), e.g. 8600 for Consul",
                                             metavar="PORT", parse=int, repeat=True))

    def all_ports(self) -> list[int]:
        return list(dict.fromkeys([*self.dns_ports, *self.ports]))


@dataclass(frozen=True)
class DnsOptions(DnsPortOptions):
    unanswered: bool = option(False, Flag("--unanswered", "only queries that got no answer"))


def make_sources(options: DnsPortOptions) -> list[Source]:
    return [DnsWireSource(ports=options.all_ports())]


def make_filter(options: DnsOptions) -> EventFilter | None:
    if not options.unanswered:
        return None
    return lambda event: event.get("answered") is False


def _fmt_rcode(value) -> str:
    return "TIMEOUT" if value is None else str(value)


COLUMNS = (
    TIME_COLUMN, *PROCESS_COLUMNS,
    Column("proto", "PROTO", 5), Column("server", "SERVER", 22), Column("qtype", "TYPE", 5),
    Column("rcode", "RCODE", 9, _fmt_rcode), Column("latency_ns", "LATENCY", 9, fmt_latency),
    Column("qname", "QNAME", 40),
)

SIGNAL = SignalSpec(
    name="dns",
    help="DNS queries and answers on the wire, per process (UDP and TCP, IPv4 and IPv6)",
    description=(
        "One line per DNS query a process sent: its nameserver, type, answer code, latency,\n"
        "or TIMEOUT when no answer came within the timeout of the process's own resolv.conf.\n"
        "Captured with cgroup_skb programs on the cgroup v2 root: every namespace and every\n"
        "resolver (libc, Go, c-ares, dig...) is seen. JSON events carry the flags\n"
        "same_port_pair, tcp_fallback and retransmit."
    ),
    columns=COLUMNS,
    options=DnsOptions,
    make_sources=make_sources,
    config_options={"agent.dns_ports": "dns_ports"},
    make_filter=make_filter,
    examples=(
        "dnstrace trace dns",
        "dnstrace trace dns --json --pid 4711",
        "dnstrace trace dns --port 8600 --unanswered",
    ),
)
