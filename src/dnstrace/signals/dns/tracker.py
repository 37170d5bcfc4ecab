"""DNS queries in, ``dns`` events out: the pure pairing, timeout and detector logic of the wire signal.

``DnsTracker`` is fed decoded packets (``Packet``; unit-testable, no kernel): it parses
the messages (``parse``), matches answers to queries by socket cookie + id + question
(one ring buffer keeps causal order; matching does not depend on arrival order beyond
that), emits one ``dns`` event per query when its answer arrives or, from ``expire``,
with ``answered=false`` once the timeout of the process's own resolv.conf has passed.
It sets the detector flags ``same_port_pair``, ``tcp_fallback``, ``retransmit`` and keeps
per-nameserver answered/unanswered counters. Every table is bounded; evictions are counted.
Every ``dns`` event is spelled in one place, ``Query.event``.

Hot path (DNS floods): one kernel-paired record per query. An exchange that repeats
(same socket, server, question and answer but for the id: a "flow") copies a cached
event template and only computes its time, id and flags (``DnsTracker.repeated_pair``).
A parsed message is cached under its bytes minus the id.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import NamedTuple

from dnstrace.bounded import BoundedDict
from dnstrace.enrich.resolvconf import DEFAULT_TIMEOUT_S, ResolvConf
from dnstrace.signals.base import Event
from dnstrace.signals.dns.abi import DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP
from dnstrace.signals.dns.caches import RecentMap
from dnstrace.signals.dns.parse import DnsMessage, MalformedDns, parse_message, qtype_name, rcode_name, split_tcp_stream

# A and AAAA "in parallel" on one port: sent from one socket within 100 ms. With a fast
# nameserver the first answer can arrive before the second query leaves even when both
# went out in one sendmmsg(), so wire timing alone cannot tell sendmmsg from sequential
# sends; resolv.conf's single-request (glibc sends one after the other) clears the flag.
SAME_PORT_WINDOW_NS = 100_000_000
TCP_FALLBACK_WINDOW_NS = 10_000_000_000  # a TCP query up to 10 s after a truncated UDP answer
RETRANSMIT_WINDOW_NS = 60_000_000_000
PARSE_CACHE_SIZE = 2048  # parsed messages kept (emptied when full): bounded, ~1 MiB at most
MIN_TIMEOUT_NS = 1_000_000_000  # resolv.conf's timeout is at least 1 s

# A parsed message and its question name lower-cased (None when it has no question).
Parsed = tuple[DnsMessage, str | None]
ResolvForPid = Callable[[int], ResolvConf | None]


class _Malformed(enum.Enum):
    MALFORMED = 0  # cached "this message did not parse"


_MALFORMED = _Malformed.MALFORMED


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
    """A query seen leaving, with its detector flags; its ``event`` once answered or timed out."""

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
    fallback_of: dict[str, object] | None = None
    pair_of: dict[str, object] | None = None
    qname_key: str = ""  # qname lower-cased: names match case-insensitively
    client: str = ""  # the source address: a TCP retry after TC is matched by flow, not by pid

    def event(self, rcode: str | None, tc: bool, ancount: int, latency_ns: int | None, answered: bool,
              answers: list[str] | None) -> Event:
        """This query's ``dns`` event with its answer's fields: the one place they are spelled (meanings: dnstrace.events)."""
        return {
            "kind": "dns", "ts": self.ts, "pid": self.pid, "tid": self.tid, "comm": self.comm,
            "qname": self.qname, "qtype": qtype_name(self.qtype), "server": self.server,
            "dport": self.dport, "sport": self.sport, "proto": self.proto, "id": self.id,
            "ns_index": self.ns_index, "retransmit": self.retransmit,
            "same_port_pair": self.same_port_pair, "tcp_fallback": self.tcp_fallback,
            "fallback_of": self.fallback_of, "pair_of": self.pair_of,
            "rcode": rcode, "tc": tc, "ancount": ancount, "latency_ns": latency_ns, "answered": answered,
            "answers": answers,
        }

    def answered_event(self, ts: int, msg: DnsMessage) -> Event:
        """Answered by ``msg`` at ``ts``."""
        latency_ns = ts - self.ts
        return self.event(rcode_name(msg.rcode), msg.tc, msg.ancount, latency_ns if latency_ns > 0 else 0, True,
                          list(msg.answers) if msg.answers else [])  # parsed messages are cached: copy

    def unanswered_event(self) -> Event:
        """No answer (yet): ``timeout_ns`` or ``pending`` is added by the caller."""
        return self.event(None, False, 0, None, False, [])


@dataclass(slots=True)
class _TcpStream:
    """Where the next message of one direction of a TCP DNS stream starts, and the segments seen."""

    next_seq: int
    starts: set[int]


class Flow(NamedTuple):
    """What every event of a repeating kernel-paired exchange shares (see ``DnsTracker.pair``)."""

    template: Event  # the event, but for ts, tid, id, latency, answers and the flags
    qname_key: str
    qtype: int | None
    check_pair: bool  # A/AAAA without single-request: look for its same-port partner
    server_counts: list[int]  # [answered, unanswered] of its nameserver
    answers: tuple[str, ...]


class DnsTracker:
    """Queries in, events out: matching, timeouts, detector flags, counters."""

    def __init__(self, resolv_for_pid: ResolvForPid | None = None, max_inflight: int = 65536,
                 max_servers: int = 1024, default_timeout_s: float = DEFAULT_TIMEOUT_S):
        self.resolv_for_pid: ResolvForPid = resolv_for_pid or (lambda pid: None)
        self.default_timeout_ns = int(default_timeout_s * 1e9)
        # (cookie, id) -> [Query]; insertion order = send order, for timeouts.
        self.inflight: BoundedDict = BoundedDict(max_inflight)
        self.recent_sent: RecentMap[tuple[int, int, str, int | None], int] = RecentMap(32768)  # (pid, id, qname, qtype) -> ts
        # (cookie, sport, qname, qtype) -> (ts, id, qtype)
        self.recent_pair: RecentMap[tuple[int, int, str, int | None], tuple[int, int, int | None]] = RecentMap(8192)
        # (client address, server, qname, qtype) -> UDP query with a TC answer. By flow, not pid: a
        # forking server (dnsmasq) retries over TCP from a child, a threaded one from another thread.
        self.recent_tc: RecentMap[tuple[str, str, str, int | None], Query] = RecentMap(8192)
        self.tcp_streams: BoundedDict = BoundedDict(4096)  # (cookie, dir) -> _TcpStream
        self.servers: BoundedDict = BoundedDict(max_servers)  # (addr, port) -> [answered, unanswered]
        # (message minus id, length, direction) -> what it parsed to, or _MALFORMED
        self._parsed: dict[tuple[bytes, int, bool], Parsed | _Malformed] = {}
        # kernel-paired UDP exchanges that repeat (floods): (cookie, pid, query and answer minus ids, lengths)
        # -> what their events share; emptied every tick (resolv.conf may change) and when full
        self._flows: dict[Hashable, Flow] = {}
        self.flow_events = 0
        self._resolv_by_pid: BoundedDict = BoundedDict(4096)  # pid -> (checked_ts, ResolvConf | None)
        self.counters = dict(packets=0, queries=0, answers=0, unanswered=0, malformed=0,
                             unmatched_answers=0, ignored=0, tcp_continuations=0)

    # --- input ---------------------------------------------------------------------------

    def packet(self, pkt: Packet) -> list[Event]:
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

    def udp_answer(self, ts: int, cookie: int, data: bytes, total: int) -> Event | None:
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

    def _parse(self, data: bytes, total: int, ingress: bool) -> Parsed | None:
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

    def _parse_uncounted(self, data: bytes, total: int, ingress: bool) -> Parsed | None:
        """``_parse`` for a look ahead: a malformed message is counted when it is handled itself."""
        malformed_before = self.counters["malformed"]
        parsed = self._parse(data, total, ingress)
        self.counters["malformed"] = malformed_before
        return parsed

    def _message(self, pkt: Packet, data: bytes, total: int) -> Event | None:
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
        state: _TcpStream | None = self.tcp_streams.get(key)
        if state is not None and pkt.seq != state.next_seq:
            # the rest of a message begun earlier, or a segment sent again (its seq in state.starts)
            self.counters["tcp_continuations"] += 1
            return []
        messages = split_tcp_stream(pkt.data, pkt.payload_len)
        if not messages:
            return []
        last_start, _, last_len = messages[-1]
        next_seq = (pkt.seq + last_start + last_len) & 0xFFFFFFFF
        starts = state.starts if state else set()
        if len(starts) < 64:
            starts.add(pkt.seq)
        self.tcp_streams.put(key, _TcpStream(next_seq, starts))
        return [(data, length) for _, data, length in messages]

    def _resolv(self, pid: int, now_ns: int) -> ResolvConf | None:
        cached: tuple[int, ResolvConf | None] | None = self._resolv_by_pid.get(pid)
        if cached and now_ns - cached[0] < 10_000_000_000:
            return cached[1]
        conf = self.resolv_for_pid(pid) if pid else None
        self._resolv_by_pid.put(pid, (now_ns, conf))
        return conf

    def resolv_conf_of(self, pid: int) -> ResolvConf | None:
        """The resolv.conf seen when ``pid`` sent its queries (still known after it exited)."""
        cached: tuple[int, ResolvConf | None] | None = self._resolv_by_pid.get(pid)
        if cached is not None and cached[1] is not None:
            return cached[1]
        return self.resolv_for_pid(pid) if pid else None

    def warm(self, pid: int, ts: int) -> None:
        """A new DNS socket of ``pid``: read its resolv.conf now, while the process lives."""
        self._resolv(pid, ts)

    def _query(self, pkt: Packet, msg: DnsMessage, msg_id: int, qname_key: str) -> None:
        query = self._make_query(pkt.ts, pkt.cookie, pkt.pid, pkt.tid, pkt.comm, pkt.daddr, pkt.dport, pkt.sport,
                                 "tcp" if pkt.proto == PROTO_TCP else "udp", msg, msg_id, qname_key, pkt.saddr)
        key = (pkt.cookie, msg_id)
        pending: list[Query] | None = self.inflight.get(key)
        if pending is None:
            self.inflight.put(key, [query])
        else:
            pending.append(query)
            del pending[:-8]  # a socket re-sending one id forever cannot grow this

    def _new_query(self, ts: int, cookie: int, pid: int, tid: int, comm: str, server: str, dport: int, sport: int,
                   proto: str, msg_id: int, qname: str, qtype: int | None, conf: ResolvConf | None,
                   qname_key: str = "", client: str = "") -> Query:
        """A query to ``server`` under the process's resolv.conf ``conf``: its timeout and server index, no flags."""
        return Query(
            ts, cookie, pid, tid, comm, server, dport, sport, proto, msg_id, qname, qtype,
            int(conf.timeout_s * 1e9) if conf else self.default_timeout_ns,
            # `in` first: server_index raises inside for unlisted servers (slow in floods)
            conf.server_index(server) if conf and server in conf.nameservers else None,
            qname_key=qname_key, client=client,
        )

    def _make_query(self, ts: int, cookie: int, pid: int, tid: int, comm: str, server: str, dport: int, sport: int,
                    proto: str, msg: DnsMessage, msg_id: int, qname_key: str, client: str = "") -> Query:
        """A query seen leaving (its flags from the queries seen before it), not yet in flight."""
        self.counters["queries"] += 1
        conf = self._resolv(pid, ts)
        assert msg.qname is not None  # qname_key is not None: it has a question
        query = self._new_query(ts, cookie, pid, tid, comm, server, dport, sport, proto, msg_id, msg.qname,
                                msg.qtype, conf, qname_key, client)
        query.retransmit = self._retransmitted(pid, msg_id, qname_key, msg.qtype, ts)
        if proto == "tcp":
            tc_query = self.recent_tc.pop((client, server, qname_key, msg.qtype))
            if tc_query is not None and ts - tc_query.ts < TCP_FALLBACK_WINDOW_NS:
                query.tcp_fallback = True
                query.fallback_of = {"ts": tc_query.ts, "id": tc_query.id, "server": tc_query.server,
                                     "sport": tc_query.sport}
        elif msg.qtype in (1, 28) and not (conf and conf.single_request):
            query.pair_of = self._same_port_partner(cookie, sport, qname_key, msg.qtype, ts, msg_id)
            query.same_port_pair = query.pair_of is not None
        return query

    def pair(self, query_ts: int, answer_ts: int, cookie: int, pid: int, tid: int, comm: str, family: int,
             client: str, client_port: int, server: str, server_port: int, query_data: bytes, query_len: int,
             answer_data: bytes, answer_len: int, flow_key: Hashable | None = None) -> list[Event]:
        """A UDP query and its answer, paired by the kernel (socket cookie + id): its event.

        The fast path makes the event without the in-flight table: the answer belongs to this
        send, the last of its id on its socket (an earlier send of the id, in user space since
        it was re-sent or swept, stays in flight until its own answer or timeout). When the
        pairing is not plain (the answer's question differs, truncation, a message does not
        parse), both go through the general packet path instead.

        ``flow_key`` names the exchange but for its id (default: socket, pid, addresses, ports and
        both messages minus their ids); ``repeated_pair`` takes the same key."""
        msg_id = (query_data[0] << 8) | query_data[1] if len(query_data) >= 2 else -1
        if len(query_data) >= 12:
            if flow_key is None:
                flow_key = (cookie, pid, server, server_port, client_port, query_data[2:], query_len,
                            answer_data[2:], answer_len)
            flow = self._flows.get(flow_key)
            if flow is None:
                flow = self._new_flow(flow_key, query_ts, pid, comm, client_port, server, server_port,
                                      query_data, query_len, answer_data, answer_len)
            if flow is not None:
                return [self._flow_event(flow, query_ts, answer_ts, pid, tid, msg_id, cookie, client_port)]
        query = Packet(query_ts, cookie, pid, tid, comm, family, PROTO_UDP, DIR_EGRESS, client, server,
                       client_port, server_port, query_len, 0, query_data)
        answer = Packet(answer_ts, cookie, pid, tid, comm, family, PROTO_UDP, DIR_INGRESS, server, client,
                        server_port, client_port, answer_len, 0, answer_data)
        return self.packet(query) + self.packet(answer)

    def repeated_pair(self, flow_key: Hashable, query_ts: int, answer_ts: int, pid: int, tid: int, msg_id: int,
                      cookie: int, client_port: int) -> Event | None:
        """The flood's shortcut: the event of a kernel-paired exchange whose flow ``pair`` has seen
        (same ``flow_key``), without its bytes; None when the flow is not known (then call ``pair``)."""
        flow = self._flows.get(flow_key)
        if flow is None:
            return None
        return self._flow_event(flow, query_ts, answer_ts, pid, tid, msg_id, cookie, client_port)

    def _new_flow(self, flow_key: Hashable, query_ts: int, pid: int, comm: str, client_port: int, server: str,
                  server_port: int, query_data: bytes, query_len: int, answer_data: bytes,
                  answer_len: int) -> Flow | None:
        """What every event of this exchange shares, or None when it needs the general path."""
        asked = self._parse_uncounted(query_data, query_len, False)  # the general path counts malformed ones
        answered = self._parse_uncounted(answer_data, answer_len, True) if asked is not None else None
        if asked is None or answered is None:
            return None
        qmsg, qname_key = asked
        amsg, answer_key = answered
        if (qmsg.qr or qname_key is None or qmsg.qname is None or not amsg.qr or amsg.tc
                or (answer_key is not None and (answer_key != qname_key or amsg.qtype != qmsg.qtype))):
            return None  # odd, or truncated (TCP fallback bookkeeping): the general path
        conf = self._resolv(pid, query_ts)
        counts: list[int] | None = self.servers.get((server, server_port))
        if counts is None:
            counts = [0, 0]
            self.servers.put((server, server_port), counts)
        shared = self._new_query(0, 0, pid, 0, comm, server, server_port, client_port, "udp", 0, qmsg.qname,
                                 qmsg.qtype, conf)
        template = shared.event(rcode_name(amsg.rcode), amsg.tc, amsg.ancount, 0, True, None)
        check_pair = qmsg.qtype in (1, 28) and not (conf and conf.single_request)
        flow = Flow(template, qname_key, qmsg.qtype, check_pair, counts, tuple(amsg.answers or ()))
        if len(self._flows) >= PARSE_CACHE_SIZE:
            self._flows.clear()
        self._flows[flow_key] = flow
        return flow

    def _flow_event(self, flow: Flow, ts: int, answer_ts: int, pid: int, tid: int, msg_id: int, cookie: int,
                    sport: int) -> Event:
        """The event of one kernel-paired exchange: the template, its time and id, and the flags of ``_make_query``."""
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
        if self._retransmitted(pid, msg_id, qname_key, qtype, ts):
            event["retransmit"] = True
        if check_pair:
            pair_of = self._same_port_partner(cookie, sport, qname_key, qtype, ts, msg_id)
            if pair_of is not None:
                event["same_port_pair"] = True
                event["pair_of"] = pair_of
        return event

    def _retransmitted(self, pid: int, msg_id: int, qname_key: str, qtype: int | None, ts: int) -> bool:
        """Whether this query repeats one of ``pid`` with its id and question sent shortly before (remembers it)."""
        recent_sent = self.recent_sent  # its get and put, inlined: once per query of a flood
        sent_key = (pid, msg_id, qname_key, qtype)
        young = recent_sent.young
        previous = young.get(sent_key)
        if previous is None:
            previous = recent_sent.old.get(sent_key)
        young[sent_key] = ts
        if len(young) >= recent_sent.half:
            recent_sent.age()
        return previous is not None and 0 <= ts - previous < RETRANSMIT_WINDOW_NS

    def _same_port_partner(self, cookie: int, sport: int, qname_key: str, qtype: int | None, ts: int,
                           msg_id: int) -> dict[str, object] | None:
        """Default glibc: A and AAAA leave one socket and port together (seed 004's precondition).
        For the later query of such a pair (its partner may be out already): the partner's ts, id and
        qtype. Remembers this one, an A or AAAA query."""
        recent_pair = self.recent_pair
        partner = recent_pair.get((cookie, sport, qname_key, 28 if qtype == 1 else 1))
        recent_pair.put((cookie, sport, qname_key, qtype), (ts, msg_id, qtype))
        if partner is not None and ts - partner[0] <= SAME_PORT_WINDOW_NS:
            return {"ts": partner[0], "id": partner[1], "qtype": qtype_name(partner[2])}
        return None

    def _answer(self, ts: int, cookie: int, msg: DnsMessage, msg_id: int, wanted: str | None) -> Event | None:
        key = (cookie, msg_id)
        pending: list[Query] | None = self.inflight.get(key)
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

    def _complete(self, q: Query, ts: int, msg: DnsMessage) -> Event:
        """The event of query ``q`` answered by ``msg`` at ``ts``."""
        self.counters["answers"] += 1
        counts: list[int] | None = self.servers.get((q.server, q.dport))  # _server_count inlined: hot path
        if counts is None:
            self._server_count(q, answered=True)
        else:
            counts[0] += 1
        if msg.tc and q.proto == "udp":
            self.recent_tc.put((q.client, q.server, q.qname_key, q.qtype), q)
        return q.answered_event(ts, msg)

    def _server_count(self, query: Query, answered: bool) -> None:
        key = (query.server, query.dport)
        counts: list[int] | None = self.servers.get(key)
        if counts is None:
            counts = [0, 0]
            self.servers.put(key, counts)
        counts[0 if answered else 1] += 1

    # --- time ------------------------------------------------------------------------------

    def shift(self, step_ns: int) -> None:
        """The wall clock was stepped by ``step_ns``: packets come on the new scale from now on, so the
        times kept from before move onto it. Latencies of queries in flight, their timeouts (against the
        Runner's now), the resolv.conf recheck and the flags' windows then stay what they were."""
        for pending in self.inflight.values():
            for query in pending:
                query.ts += step_ns
        for pid, (checked_ns, conf) in self._resolv_by_pid.items():
            self._resolv_by_pid[pid] = (checked_ns + step_ns, conf)  # an existing key: its place is kept
        self.recent_sent.update_values(lambda sent_ns: sent_ns + step_ns)
        self.recent_pair.update_values(lambda partner: (partner[0] + step_ns, *partner[1:]))
        self.recent_tc.update_values(lambda query: replace(query, ts=query.ts + step_ns))

    def expire(self, now_ns: int) -> list[Event]:
        """Queries whose resolver timeout passed without an answer -> ``answered=false`` events."""
        self._flows.clear()  # re-read what they hold (resolv.conf, server counters) once a second
        events = []
        expired_keys = []
        for key, pending in self.inflight.items():
            if pending and now_ns - pending[0].ts < MIN_TIMEOUT_NS:
                break  # entries are in send order; nothing newer can have timed out
            keep = []
            for query in pending:
                if now_ns - query.ts >= query.timeout_ns:
                    self.counters["unanswered"] += 1
                    self._server_count(query, answered=False)
                    event = query.unanswered_event()
                    event["timeout_ns"] = query.timeout_ns
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

    def pending(self) -> list[Event]:
        """In-flight queries as unanswered-so-far attempts (for the lookup join)."""
        attempts = []
        for pending in self.inflight.values():
            for query in pending:
                event = query.unanswered_event()
                event["pending"] = True
                attempts.append(event)
        return attempts

    def query_event(self, pkt: Packet) -> Event | None:
        """A query not handed to the tracker yet (held by the kernel) as a pending attempt; no state changes."""
        if len(pkt.data) < 12:
            return None
        parsed = self._parse_uncounted(pkt.data, pkt.payload_len, False)  # cached: floods repeat their questions
        if parsed is None or parsed[0].qr or parsed[0].qname is None:
            return None
        msg = parsed[0]
        assert msg.qname is not None
        query = self._new_query(pkt.ts, pkt.cookie, pkt.pid, pkt.tid, pkt.comm, pkt.daddr, pkt.dport, pkt.sport,
                                "udp", (pkt.data[0] << 8) | pkt.data[1], msg.qname, msg.qtype,
                                self.resolv_conf_of(pkt.pid))
        event = query.unanswered_event()
        event["pending"] = True
        return event

    # --- counters --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """The tracker's counters, in-flight queries and evictions."""
        counts = dict(self.counters)
        counts["packets"] += 2 * self.flow_events
        counts["queries"] += self.flow_events
        counts["answers"] += self.flow_events
        counts["inflight"] = sum(len(p) for p in self.inflight.values())
        counts["inflight_evicted"] = self.inflight.evicted
        return counts

    def server_counts(self) -> dict[str, dict[str, int]]:
        """Per nameserver ("addr:port"): answered and unanswered queries."""
        return {_server_name(server, port): {"answered": c[0], "unanswered": c[1]}
                for (server, port), c in self.servers.items()}

    def stats(self) -> dict[str, object]:
        stats: dict[str, object] = dict(self.counts())
        stats["servers"] = self.server_counts()
        return stats


def _server_name(server: str, port: int) -> str:
    return f"[{server}]:{port}" if ":" in server else f"{server}:{port}"
