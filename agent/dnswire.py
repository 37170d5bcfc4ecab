"""DNS on the wire, per process: ``dnstrace trace dns``.

Kernel side: ``bpf/dns.bpf.c`` (cgroup_skb egress + ingress on the cgroup v2 root,
attached through BPF links) copies every DNS packet a client socket sends or
receives into one ring buffer, with the socket's owner process.

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

Hot path (DNS floods): a parsed message is cached under its bytes minus the id
(floods repeat questions), UDP answers skip building a ``Packet``, address and
comm texts are cached. ``bench/bench_dns_flood.py`` measures it.
"""

from __future__ import annotations

import argparse
import ctypes
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass

from dnstrace.agent import bpfload
from dnstrace.agent.dnsparse import MalformedDns, parse_message, qtype_name, rcode_name, split_tcp_stream
from dnstrace.agent.resolvconf import DEFAULT_TIMEOUT_S, ResolvConf, ResolvConfCache
from dnstrace.agent.ringbuf import RingBufReader
from dnstrace.agent.runtime import Source
from dnstrace.agent.tracing import TraceTarget
from dnstrace.errors import UsageError
from dnstrace.output import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_latency

# struct dns_event_hdr in bpf/dns.h (88 bytes, little endian, no padding).
EVENT_HDR = struct.Struct("<QQIII16s16sHHHHBBBB16s")
EVENT_HDR_SIZE = EVENT_HDR.size
HDR_PAYLOAD_LEN, HDR_CAP_LEN, HDR_PROTO, HDR_DIRECTION = 9, 10, 12, 13  # indexes in EVENT_HDR tuples
DIR_EGRESS, DIR_INGRESS = 0, 1
PROTO_TCP, PROTO_UDP = 6, 17
# Kernel counter indexes (DNS_CNT_* in bpf/dns.h).
KERNEL_COUNTERS = ("kernel_events", "ringbuf_lost", "kernel_malformed", "no_owner")

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

    def event(self) -> dict:
        return {
            "kind": "dns", "ts": self.ts, "pid": self.pid, "tid": self.tid, "comm": self.comm,
            "qname": self.qname, "qtype": qtype_name(self.qtype), "server": self.server,
            "dport": self.dport, "sport": self.sport, "proto": self.proto, "id": self.id,
            "ns_index": self.ns_index, "retransmit": self.retransmit,
            "same_port_pair": self.same_port_pair, "tcp_fallback": self.tcp_fallback,
            "fallback_of": self.fallback_of, "pair_of": self.pair_of,
        }


class BoundedDict(OrderedDict):
    """Insertion-ordered dict that drops its oldest entries past ``limit`` and counts them."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.evicted = 0

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
            self.evicted += 1


class DnsTracker:
    """Queries in, events out: matching, timeouts, detector flags, counters."""

    def __init__(self, resolv_for_pid=None, max_inflight: int = 65536, max_servers: int = 1024,
                 default_timeout_s: float = DEFAULT_TIMEOUT_S):
        self.resolv_for_pid = resolv_for_pid or (lambda pid: None)
        self.default_timeout_ns = int(default_timeout_s * 1e9)
        # (cookie, id) -> [Query]; insertion order = send order, for timeouts.
        self.inflight: BoundedDict = BoundedDict(max_inflight)
        self.recent_sent: BoundedDict = BoundedDict(16384)  # (pid, id, qname, qtype) -> ts
        self.recent_pair: BoundedDict = BoundedDict(4096)  # (cookie, sport, qname, qtype) -> Query
        self.recent_tc: BoundedDict = BoundedDict(4096)  # (pid, qname, qtype) -> UDP query with TC answer
        self.tcp_streams: BoundedDict = BoundedDict(4096)  # (cookie, dir) -> [next seq, {starts}]
        self.servers: BoundedDict = BoundedDict(max_servers)  # (addr, port) -> [answered, unanswered]
        self._parsed: dict = {}  # (message minus id, length, direction) -> DnsMessage | _MALFORMED
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

    def _query(self, pkt: Packet, msg, msg_id: int, qname_key: str) -> None:
        self.counters["queries"] += 1
        conf = self._resolv(pkt.pid, pkt.ts)
        query = Query(
            pkt.ts, pkt.cookie, pkt.pid, pkt.tid, pkt.comm, pkt.daddr, pkt.dport, pkt.sport,
            "tcp" if pkt.proto == PROTO_TCP else "udp", msg_id, msg.qname, msg.qtype,
            int(conf.timeout_s * 1e9) if conf else self.default_timeout_ns,
            # `in` first: server_index raises inside for unlisted servers (slow in floods)
            conf.server_index(pkt.daddr) if conf and pkt.daddr in conf.nameservers else None,
            qname_key=qname_key,
        )
        sent_key = (pkt.pid, msg_id, qname_key, msg.qtype)
        previous = self.recent_sent.get(sent_key)
        if previous is not None and pkt.ts - previous < RETRANSMIT_WINDOW_NS:
            query.retransmit = True
        self.recent_sent.put(sent_key, pkt.ts)
        if query.proto == "tcp":
            tc_query = self.recent_tc.pop((pkt.pid, qname_key, msg.qtype), None)
            if tc_query is not None and pkt.ts - tc_query.ts < TCP_FALLBACK_WINDOW_NS:
                query.tcp_fallback = True
                query.fallback_of = {"ts": tc_query.ts, "id": tc_query.id, "server": tc_query.server,
                                     "sport": tc_query.sport}
        elif msg.qtype in (1, 28) and not (conf and conf.single_request):
            self._pair_check(query, qname_key)
        key = (pkt.cookie, msg_id)
        pending = self.inflight.get(key)
        if pending is None:
            self.inflight.put(key, [query])
        else:
            pending.append(query)
            del pending[:-8]  # a socket re-sending one id forever cannot grow this

    def _pair_check(self, query: Query, qname_key: str) -> None:
        """Default glibc: A and AAAA leave one socket and port together (seed 004's precondition)."""
        other_type = 28 if query.qtype == 1 else 1
        partner = self.recent_pair.get((query.cookie, query.sport, qname_key, other_type))
        if partner is not None and query.ts - partner.ts <= SAME_PORT_WINDOW_NS:
            query.same_port_pair = True  # on the later query of the pair: its partner may be out already
            query.pair_of = {"ts": partner.ts, "id": partner.id, "qtype": qtype_name(partner.qtype)}
        self.recent_pair.put((query.cookie, query.sport, qname_key, query.qtype), query)

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
        self.counters["answers"] += 1
        q = query
        counts = self.servers.get((q.server, q.dport))  # _server_count inlined: hot path
        if counts is None:
            self._server_count(q, answered=True)
        else:
            counts[0] += 1
        if msg.tc and q.proto == "udp":
            self.recent_tc.put((q.pid, q.qname_key, q.qtype), q)
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

    def stats(self) -> dict:
        stats = dict(self.counters)
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


class DnsWireSource(Source):
    name = "dns"

    def __init__(self, ports=(53,), ringbuf_pages: int = 4096, max_inflight: int = 65536):
        ports = sorted({int(p) for p in ports})
        for port in ports:
            if not 0 < port < 65536:
                raise UsageError(f"not a port number: {port}")
        if not ports or len(ports) > 64:
            raise UsageError("give between 1 and 64 DNS ports")
        self.ports = ports
        self.ringbuf_pages = ringbuf_pages
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

    def start(self) -> None:
        defines = f"#define RINGBUF_PAGES {self.ringbuf_pages}\n"
        self.bpf = bpfload.load("dns", text_prefix=defines)
        ports = self.bpf["dns_ports"]
        for port in self.ports:
            ports[ctypes.c_ushort(port)] = ctypes.c_ubyte(1)
        root = bpfload.find_cgroup2_root()
        egress = self.bpf.load_func("dns_egress", self.bpf.CGROUP_SKB)
        ingress = self.bpf.load_func("dns_ingress", self.bpf.CGROUP_SKB)
        self.reader = RingBufReader(self.bpf["events"].map_fd)
        self._offset_ns = bpfload.monotonic_to_unix_offset_ns()
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
        (ts, cookie, pid, tid, seq, saddr, daddr, sport, dport, payload_len, cap_len,
         family, proto, direction, _pad, comm) = header
        addresses = self._ipv4 if family == 4 else self._ipv6
        return Packet(ts + self._offset_ns, cookie, pid, tid, self._comms[comm], family, proto, direction,
                      addresses[saddr], addresses[daddr], sport, dport, payload_len, seq,
                      area[data_start:data_start + min(cap_len, data_room)])

    def _record(self, area, offset: int, length: int) -> None:
        """Feed one ring buffer record to the tracker; its events go to ``self._events``."""
        if length < EVENT_HDR_SIZE:
            raise ValueError("record shorter than its header")
        header = EVENT_HDR.unpack_from(area, offset)
        if header[HDR_DIRECTION] == DIR_INGRESS and header[HDR_PROTO] == PROTO_UDP:
            start = offset + EVENT_HDR_SIZE
            cap_len = header[HDR_CAP_LEN]
            if cap_len > length - EVENT_HDR_SIZE:
                cap_len = length - EVENT_HDR_SIZE
            event = self.tracker.udp_answer(header[0] + self._offset_ns, header[1], area[start:start + cap_len],
                                            header[HDR_PAYLOAD_LEN])
            if event is not None:
                self._events.append(event)
            return
        events = self.tracker.packet(self._packet(header, area, offset + EVENT_HDR_SIZE, length - EVENT_HDR_SIZE))
        if events:
            self._events.extend(events)

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
        return events

    def tick(self, now_ns: int) -> list[dict]:
        return self.tracker.expire(now_ns)

    def pending(self) -> list[dict]:
        return self.tracker.pending()

    def kernel_counters(self) -> dict:
        if self.bpf is None:
            return {}
        table = self.bpf["counters"]
        values = {}
        for index, name in enumerate(KERNEL_COUNTERS):
            values[name] = sum(table[ctypes.c_int(index)])
        return values

    def stats(self) -> dict:
        stats = self.tracker.stats()
        kernel = self.kernel_counters()
        if kernel:
            stats["malformed"] += kernel.pop("kernel_malformed")
            stats.update(kernel)
        if self.reader is not None:
            self.records = self.reader.records
            self.records_malformed = self.reader.malformed
        stats["records"] = self.records
        stats["malformed"] += self.records_malformed
        stats["resolv_conf_reads"] = self.resolv_cache.reads
        return stats

    def close(self) -> None:
        for link in self.links:
            link.close()
        self.links = []
        if self.reader is not None:
            self.records, self.records_malformed = self.reader.records, self.reader.malformed
            self.reader.close()
            self.reader = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


# --- trace target -------------------------------------------------------------------------------


def dns_ports(args: argparse.Namespace) -> list[int]:
    ports = list(getattr(args, "dns_ports", None) or [53])
    ports += list(getattr(args, "port", None) or [])
    return ports


def make_sources(args: argparse.Namespace) -> list[Source]:
    return [DnsWireSource(ports=dns_ports(args))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, action="append", default=None, metavar="PORT",
                        help="also trace this port as DNS (repeatable), e.g. 8600 for Consul")
    parser.add_argument("--unanswered", action="store_true", help="only queries that got no answer")


def make_filter(args: argparse.Namespace):
    if not getattr(args, "unanswered", False):
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

TRACE = TraceTarget(
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
    make_sources=make_sources,
    add_arguments=add_arguments,
    make_filter=make_filter,
    examples=(
        "dnstrace trace dns",
        "dnstrace trace dns --json --pid 4711",
        "dnstrace trace dns --port 8600 --unanswered",
    ),
)
