"""The window the rules read: the last minute of events by kind, with the views they share.

``Window`` computes each view once per evaluation, on first use: the wire queries (dns
events plus the attempts inside lookup events), one pass of ``QueryFacts`` over them, the
events of one process, the resolv.conf a process sees (one typed ``ResolvConf``), its
lookups and resolver model, the caches on this node that apps go through, conntrack
totals, and the agent's own DNS losses.

The agent's own losses arrive as ``agent`` events (see ``pipeline.losses``): rules
that conclude from silence (no answer, a timeout) pass their conclusion through
``mark_unreliable``, which says "unreliable" and lowers the severity (to "info" when the
records lost could alone explain the silence).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from dnstrace.enrich.resolvconf import ResolvConf
from dnstrace.events import CONNTRACK_COUNTERS
from dnstrace.findings.model import Event, Evidence, ProcessKey, by_process, lower, process_name

WINDOW_NS = 60 * 1_000_000_000
# conntrack counters the rules add up over the window
NO_RESOLV_CONF = ResolvConf()  # nothing seen: no nameservers, glibc's defaults

EventsByPid = Mapping[Any, Sequence[Event]]  # pid -> that process's events in time order


class QueryFacts:
    """What the rules look for among the window's queries, found in one pass.

    Most queries are answered, fast, NOERROR and plain UDP: the rules need the few that are
    not, plus per-server latencies and per-(name, type) counts."""

    __slots__ = ("unanswered", "nxdomain", "truncated", "fallbacks", "same_port", "server_latencies",
                 "name_counts")

    def __init__(self, queries: list[Event]):
        self.unanswered: list[Event] = []  # answered is False, with a server
        self.nxdomain: list[Event] = []
        self.truncated: list[Event] = []  # TC answers
        self.fallbacks: list[Event] = []  # TCP retries after a truncated answer
        self.same_port: list[Event] = []  # A/AAAA flagged as sent in parallel from one port
        self.server_latencies: defaultdict[Any, list[Any]] = defaultdict(list)  # server -> its UDP latencies
        counts: Counter[tuple[Any, Any]] = Counter()  # (qname as sent, qtype) of first UDP transmissions
        for q in queries:
            answered = q.get("answered")
            server = q.get("server")
            proto = q.get("proto", "udp")
            if answered is False:
                if server:
                    self.unanswered.append(q)
            else:
                latency = q.get("latency_ns")
                if latency is not None and server and proto == "udp":
                    self.server_latencies[server].append(latency)
                if q.get("tc"):
                    self.truncated.append(q)
            if q.get("rcode") == "NXDOMAIN":
                self.nxdomain.append(q)
            if q.get("tcp_fallback") or (proto == "tcp" and q.get("after_tc")):
                self.fallbacks.append(q)
            if q.get("same_port_pair") and q.get("qtype") in ("A", "AAAA"):
                self.same_port.append(q)
            if proto == "udp" and not q.get("retransmit"):
                qname = q.get("qname")
                if qname:
                    counts[(qname, q.get("qtype"))] += 1
        self.name_counts = counts

    def case_folded_counts(self) -> Counter[tuple[str, Any]]:
        """(lower-case qname, qtype) -> queries (0x20-randomised names count as one)."""
        folded: Counter[tuple[str, Any]] = Counter()
        for (qname, qtype), n in self.name_counts.items():
            folded[(str(qname).lower(), qtype)] += n
        return folded


class Window:
    """The events of the last window, by kind, with a few derived views the rules share."""

    def __init__(self, events_by_kind: Mapping[str, list[Event]], now_ns: int, window_ns: int = WINDOW_NS,
                 gai_traced: bool | None = None, by_pid: Mapping[str, EventsByPid] | None = None):
        self.by_kind = events_by_kind
        self.by_pid = by_pid  # kind -> pid -> that process's events in time order (the engine's buffers)
        self.now_ns = now_ns
        self.window_ns = window_ns
        self.gai_traced = bool(events_by_kind.get("gai")) if gai_traced is None else gai_traced
        self._queries: list[Event] | None = None
        self._resolv_by_pid: dict[Any, ResolvConf] = {}
        self._latencies_by_pid: defaultdict[Any, list[int]] | None = None
        self._queries_by_process: Mapping[ProcessKey, Sequence[Event]] | None = None
        self._facts: QueryFacts | None = None
        self._dns_lost: int | None = None
        self._lookups_by_pid: defaultdict[Any, list[Event]] | None = None
        self._via: dict[tuple[Any, Any], dict[str, Any]] | None = None

    def kind(self, name: str) -> list[Event]:
        return self.by_kind.get(name, [])

    @property
    def window_s(self) -> float:
        return self.window_ns / 1e9

    def queries(self) -> list[Event]:
        """Wire queries: dns events plus the attempts inside lookup events that no dns event repeats.

        (The lookups signal puts libc lookups' queries inside ``lookup`` events and emits
        only the others, e.g. a Go program's, as ``dns`` events: both are needed.)"""
        if self._queries is None:
            queries = list(self.kind("dns"))
            with_attempts = [e for e in self.kind("lookup") if e.get("attempts")]
            seen = {(q.get("pid"), q.get("ts"), q.get("id"), q.get("sport")) for q in queries} if with_attempts \
                else set()
            for lookup in with_attempts:
                for attempt in lookup.get("attempts") or ():
                    if isinstance(attempt, dict) and (lookup.get("pid"), attempt.get("ts"), attempt.get("id"),
                                                      attempt.get("sport")) not in seen:
                        q = dict(attempt)
                        for name in ("pid", "comm", "process", "container", "nameservers", "resolv_options",
                                     "search", "resolv_conf"):
                            q.setdefault(name, lookup.get(name))
                        q.setdefault("qname", lookup.get("name"))
                        queries.append(q)
            self._queries = queries
        return self._queries

    def facts(self) -> QueryFacts:
        """One pass over the queries, shared by every rule (each then reads a short list)."""
        if self._facts is None:
            self._facts = QueryFacts(self.queries())
        return self._facts

    def queries_by_process(self) -> Mapping[ProcessKey, Sequence[Event]]:
        """``queries()`` grouped by (pid, comm), computed once for every rule."""
        if self._queries_by_process is None:
            if len(self.queries()) == len(self.kind("dns")):  # no query only a lookup event holds
                self._queries_by_process = self.by_process("dns")
            else:
                self._queries_by_process = by_process(self.queries())
        return self._queries_by_process

    def by_process(self, kind: str) -> Mapping[ProcessKey, Sequence[Event]]:
        """Events of ``kind`` by (pid, comm): the engine's per-process buffers when there are some."""
        buffers = self.by_pid.get(kind) if self.by_pid is not None else None
        if buffers is None:
            return by_process(self.kind(kind))
        groups: dict[ProcessKey, Sequence[Event]] = {}
        for pid, events in buffers.items():
            if not pid:
                continue
            if process_name(events[0]) == process_name(events[-1]):  # one program (comm changes on exec)
                groups[(pid, process_name(events[0]))] = events
            else:  # the process exec'd another program: one group per comm, as by_process makes
                groups.update(by_process(events))
        return groups

    def dns_records_lost(self) -> int:
        """DNS records the agent itself lost in the window (ring buffer full, evicted in-flight
        queries...): answers among them look like silence, so absence-based rules must say so."""
        if self._dns_lost is None:
            self._dns_lost = sum(int(e.get("dns_lost") or 0) for e in self.kind("agent"))
        return self._dns_lost

    def lookups(self) -> list[Event]:
        """Whole lookups: lookup events, or gai calls when the lookups signal is not there."""
        return self.kind("lookup") or self.kind("gai")

    def process_resolv(self, pid: Any) -> ResolvConf:
        """The resolv.conf of a process, from its latest resolution event that carries one
        (glibc's defaults and no nameservers when none does)."""
        if pid not in self._resolv_by_pid:
            event = self._resolv_event(pid)
            conf = ResolvConf.of_event(event) if event is not None else None
            self._resolv_by_pid[pid] = conf or NO_RESOLV_CONF
        return self._resolv_by_pid[pid]

    def _resolv_event(self, pid: Any) -> Event | None:
        if self.by_pid is None:  # a recorded stream: group it once
            grouped: dict[str, EventsByPid] = {}
            for name, events in self.by_kind.items():
                groups: defaultdict[Any, list[Event]] = defaultdict(list)
                for e in events:
                    groups[e.get("pid") or 0].append(e)
                grouped[name] = groups
            self.by_pid = grouped
        for kind in ("lookup", "gai", "dns"):  # lookup events are the richest; the latest one wins
            for e in reversed(self.by_pid.get(kind, {}).get(pid or 0, ())):
                if e.get("nameservers") or isinstance(e.get("resolv_conf"), dict):
                    return e
        return None

    def slow_lookups_of(self, pid: Any) -> list[int]:
        """Latencies of the process's lookups (those that waited for no timeout count as they were)."""
        if self._latencies_by_pid is None:
            self._latencies_by_pid = defaultdict(list)
            for e in self.lookups():
                if e.get("latency_ns"):
                    self._latencies_by_pid[e.get("pid")].append(int(e["latency_ns"]))
        return sorted(self._latencies_by_pid.get(pid, ()))

    def lookups_of(self, pid: Any) -> list[Event]:
        """The process's ``lookup`` events (not gai calls: those carry no resolver model)."""
        if self._lookups_by_pid is None:
            groups: defaultdict[Any, list[Event]] = defaultdict(list)
            for e in self.kind("lookup"):
                groups[e.get("pid")].append(e)
            self._lookups_by_pid = groups
        return self._lookups_by_pid.get(pid, [])

    def resolver_of(self, pid: Any) -> str | None:
        """The resolver model the lookups signal named for the process (None: not stated)."""
        for e in reversed(self.lookups_of(pid)):
            if e.get("resolver"):
                return str(e["resolver"])
        return None

    def caches_used(self) -> dict[tuple[Any, Any], dict[str, Any]]:
        """(app pid, nameserver) -> the node-local process serving it (``via`` of the app's lookups)."""
        if self._via is None:
            self._via = {}
            for e in self.kind("lookup"):
                via = e.get("via")
                if isinstance(via, dict) and via.get("server"):
                    self._via[(e.get("pid"), via["server"])] = via
        return self._via

    def conntrack_totals(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for e in self.kind("conntrack"):
            for name in CONNTRACK_COUNTERS:
                totals[name] += int(e.get(name) or 0)
        return dict(totals)


def shown_options(conf: ResolvConf) -> list[str]:
    """The resolv.conf options a finding's evidence shows: none when no event of the process carried them."""
    return [] if conf is NO_RESOLV_CONF else conf.options()


def mark_unreliable(w: Window, absent: int, severity: str, summary: str, evidence: Evidence) -> tuple[str, str]:
    """For rules that conclude from silence: (severity, summary) given the agent's own DNS losses;
    with losses, the summary starts with the caveat and ``evidence`` gets ``agent_lost_dns_records``.

    The losses cannot be tied to a process (a ring buffer overflows for everyone), so the
    finding stays, marked unreliable: severity "info" when the records lost could alone
    account for the ``absent`` answers, one level lower otherwise; unchanged without loss."""
    lost = w.dns_records_lost()
    if not lost:
        return severity, summary
    evidence["agent_lost_dns_records"] = lost
    if lost >= absent:
        return "info", (f"unreliable: the agent itself lost {lost} DNS records in the last {w.window_s:g} s, "
                        f"enough to explain the {absent} missing answers: {summary}")
    return lower(severity), (f"unreliable: the agent itself lost {lost} DNS records in the last {w.window_s:g} s, "
                             f"so some answers may not have been seen: {summary}")
