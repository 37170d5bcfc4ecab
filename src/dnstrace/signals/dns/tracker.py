"""DNS queries in, ``dns`` events out: the pure pairing, timeout and detector logic of the wire signal.

``DnsTracker`` is fed decoded packets (``Packet``; unit-testable, no kernel): it parses
the messages (``parse``), matches answers to queries by socket cookie + id + question
(one ring buffer keeps causal order; matching does not depend on arrival order beyond
that), emits one ``dns`` event per query when its answer arrives or, from ``expire``,
with ``answered=false`` once the timeout of the process's own resolv.conf has passed.
It sets the detector flags ``same_port_pair``, ``tcp_fallback``, ``retransmit`` and keeps
per-nameserver answered/unanswered counters. Every table is bounded; evictions are counted.

Hot path (DNS floods): one kernel-paired record per query. An exchange that repeats
(same socket, server, question and answer but for the id: a "flow") copies a cached
event template and only computes its time, id and flags (``DnsTracker._flow_event``).
A parsed message is cached under its bytes minus the id.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnstrace.bounded import BoundedDict
from dnstrace.enrich.resolvconf import DEFAULT_TIMEOUT_S, ResolvConf
from dnstrace.signals.dns.abi import DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP
from dnstrace.signals.dns.caches import RecentMap
from dnstrace.signals.dns.parse import MalformedDns, parse_message, qtype_name, rcode_name, split_tcp_stream

# A and AAAA "in parallel" on one port: sent from one socket within 100 ms. With a fast
# nameserver the first answer can arrive before the second query leaves even when both
# went out in one sendmmsg(), so wire timing alone cannot tell sendmmsg from sequential
# sends; resolv.conf's single-request (glibc sends one after the other) clears the flag.
SAME_PORT_WINDOW_NS = 100_000_000
TCP_FALLBACK_WINDOW_NS = 10_000_000_000  # a TCP query up to 10 s after a truncated UDP answer
RETRANSMIT_WINDOW_NS = 60_000_000_000
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
