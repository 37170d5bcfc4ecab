"""Findings: rules that turn the last minute of events into a named cause, its evidence and a fix.

``FindingsEngine`` is a pipeline ``Stage``: it keeps the recent events it needs (per
kind, bounded, the bound shared fairly between processes so that one flooding process
cannot evict another's evidence, drops counted), ``evaluate(now_ns)`` runs every rule over that window,
and ``tick()`` returns the finding events that are new (or due again) so the
pipeline hands them to every sink (shipper, metrics); sinks with ``set_findings``
(metrics) also get the active set after each evaluation. A rule is
a function ``(Window) -> list[Finding]``; each finding has a stable ``rule`` id, a
``severity``, a one-sentence ``summary`` that names the cause with the processes and
addresses involved, the ``evidence`` (counts, addresses, pids, the resolv.conf line)
and a ``fix``. Findings are events too (kind ``finding``), so they ship like the rest.

The agent's own losses arrive as ``agent`` events (see ``pipeline.LossMonitor``): rules
that conclude from silence (no answer, a timeout) then say "unreliable" and lower their
severity (to "info" when the records lost could alone explain the silence).

Rules (one per seed incident at least, see shared/seeds/README.md):
dead-nameserver, slow-nameserver, timeout-multiple-latency, truncated-not-cached,
tcp-fallback, syn-retransmits, rp-filter-no-address, rp-filter-drops,
conntrack-insert-failed, conntrack-table-full, aaaa-same-port-race,
ndots-nxdomain-storm, cache-miss-storm, resolver-bypasses-libc, local-cache-upstream.

Resolver chains (``chains``): a lookup through a cache on this node carries ``via``;
``local-cache-upstream`` blames the cache's upstream hop (naming the app that waited
and the cache), and ``dead-nameserver`` leaves such a cache alone: a working local
cache is never the thing to remove. Latency claims ("take N s") come only from lookups
that waited for a timeout (``waited_timeouts``, per resolver model: musl asks every
server at once and waits for none). A finding's ``confidence`` says what it rests on:
"measured" (libc calls timed), "wire" (grouped from the wire, resolver known),
"wire-only" (resolver unknown: the claim is the wire's alone).
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dnstrace.enrich.resolver_models import model_from_wire
from dnstrace.events import CONNTRACK_COUNTERS
from dnstrace.flow import Stage
from dnstrace.units import format_duration_ns

WINDOW_NS = 60 * 1_000_000_000
MAX_EVENTS_PER_KIND = 20_000  # shared fairly between processes (see FairBuffer)
# Fields no rule reads that hold lists/dicts of their own: left out of buffered events (memory).
UNUSED_FIELDS = frozenset(("answers", "pair_of", "fallback_of"))
REEMIT_NS = 60 * 1_000_000_000  # an active finding is shipped again at most this often
REEMIT_CHANGED_NS = 5 * 1_000_000_000  # ... or this often when the processes it names change
DEFAULT_TIMEOUT_S = 5.0  # glibc's resolver timeout when resolv.conf says nothing
DNS_PORTS = frozenset((53, 853, 8600))
# Programs that answer or forward DNS for others: their upstream traffic is not "an app's lookups".
DNS_SERVER_COMMS = frozenset(("dnsmasq", "unbound", "named", "coredns", "systemd-resolve", "node-cache",
                              "kube-dns", "pdns_recursor", "knotd", "knot-resolver", "kresd", "consul", "nscd"))
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
ORDINALS = ("first", "second", "third", "fourth")


@dataclass
class Finding:
    rule: str
    severity: str
    summary: str
    evidence: dict
    fix: str
    key: str = ""  # what makes two findings of one rule different (server, destination...)
    pids: list = field(default_factory=list)
    comms: list = field(default_factory=list)
    containers: list = field(default_factory=list)
    confidence: str = ""  # "measured", "wire", "wire-only" (see the module docstring); "" = not stated

    @classmethod
    def of_process(cls, rule: str, severity: str, summary: str, evidence: dict, fix: str, pid: int, comm: str,
                   container: str, key: str = "") -> Finding:
        """A finding about one process (keyed by its pid unless ``key`` says otherwise)."""
        return cls(rule, severity, summary, evidence, fix, key=key or f"{pid}", pids=[pid], comms=[comm],
                   containers=[container] if container else [])

    def event(self, ts_ns: int, host: str = "") -> dict:
        return {"kind": "finding", "ts": ts_ns, "host": host, "pid": self.pids[0] if self.pids else 0,
                "tid": 0, "comm": self.comms[0] if self.comms else "",
                "container": self.containers[0] if self.containers else "", "pod": "", "namespace": "",
                "rule": self.rule, "severity": self.severity, "summary": self.summary,
                "evidence": self.evidence, "fix": self.fix, "key": self.key,
                "pids": list(self.pids), "comms": list(self.comms), "containers": list(self.containers),
                "confidence": self.confidence}


# --- helpers ---------------------------------------------------------------------------


def _name(e: dict):
    """The process name of an event: the thread-group leader's (``process``), else the thread's comm."""
    return e.get("process") or e.get("comm")


def proc_label(pid, comm, container: str = "") -> str:
    text = f"pid {pid} ({comm or '?'}"
    if container:
        text += f", container {container}"
    return text + ")"


def _container_of(events: Iterable[dict]) -> str:
    """The first container name among the events ("" for a host process)."""
    return next((e.get("container") for e in events if e.get("container")), "")


def _dur(ns) -> str:
    return format_duration_ns(ns)


def _timeout_s(options: Iterable[str]) -> float:
    for option in options or ():
        if option.startswith("timeout:"):
            try:
                return max(1.0, min(30.0, float(option.split(":", 1)[1])))
            except ValueError:
                pass
    return DEFAULT_TIMEOUT_S


def _has_option(options: Iterable[str], *names: str) -> bool:
    return any(o.split(":", 1)[0] in names for o in options or ())


def _resolv_path(pid) -> str:
    return f"/proc/{pid}/root/etc/resolv.conf"


def _affected(events: Iterable[dict]) -> tuple[list, list, list]:
    """pids, comms, containers of the events, most frequent first (at most 10 each)."""
    pids, comms, containers = Counter(), Counter(), Counter()
    for e in events:
        if e.get("pid"):
            pids[e["pid"]] += 1
        if _name(e):
            comms[_name(e)] += 1
        if e.get("container"):
            containers[e["container"]] += 1
    return ([p for p, _ in pids.most_common(10)], [c for c, _ in comms.most_common(10)],
            [c for c, _ in containers.most_common(10)])


def _top_process(events: Iterable[dict]) -> dict:
    counts = Counter((e.get("pid"), _name(e), e.get("container") or "") for e in events if e.get("pid"))
    if not counts:
        return {"pid": 0, "comm": "?", "container": ""}
    (pid, comm, container), _ = counts.most_common(1)[0]
    return {"pid": pid, "comm": comm, "container": container}


def _by_process(events: Iterable[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("pid"):
            groups[(e["pid"], _name(e))].append(e)
    return groups


def _unreliable(w: Window, absent: int, severity: str, summary: str, evidence: dict) -> tuple[str, str]:
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
    return _lower(severity), (f"unreliable: the agent itself lost {lost} DNS records in the last {w.window_s:g} s, "
                              f"so some answers may not have been seen: {summary}")


def _lower(severity: str) -> str:
    return {"critical": "warning", "warning": "info"}.get(severity, severity)


def _confidence(lookups: Iterable[dict]) -> str:
    """What lookup-based claims rest on: libc calls timed, wire grouping with a known or unknown resolver."""
    lookups = list(lookups)
    if not lookups or any(e.get("source") == "gai" or e.get("kind") == "gai" for e in lookups):
        return "measured"
    if all(e.get("resolver") in (None, "unknown") for e in lookups):
        return "wire-only"
    return "wire"


WIRE_ONLY_NOTE = " (judged from the wire alone: this process's resolver is not known)"


def _waited(lookup: dict) -> bool:
    """The lookup sat through a timeout (older streams without the field: assume it did)."""
    return lookup.get("waited_timeouts") is not False


def _is_dns_server_comm(comm) -> bool:
    # Exact names only: "consul-client" or "named-pipe-app" are not DNS servers.
    return bool(comm) and comm in DNS_SERVER_COMMS


class FairBuffer:
    """The recent events of one kind, by process, with a total bound shared fairly (max-min).

    When the bound is reached, the oldest event of the process holding the *most* events
    goes: a process flooding DNS loses its own history and nobody else's, so the few
    events that show another incident (20 NXDOMAIN expansions) stay. The largest process
    is found in O(1): processes are filed by how many events they hold. Events are kept
    slimmed (fields no rule reads are left out); order is by time within one process.
    """

    def __init__(self, max_events: int):
        self.max_events = max_events
        self.by_pid: dict[object, deque] = {}
        # events held -> pids holding that many, in the order they got there (ties: the longest there loses)
        self._by_size: dict[int, dict] = defaultdict(dict)
        self._largest = 0
        self.total = 0
        self.evicted = 0  # events dropped because of the bound (not because they aged out)

    def _resize(self, pid, old: int, new: int) -> None:
        """File ``pid`` under its new size (callers keep ``_largest`` right)."""
        if old:
            holders = self._by_size[old]
            holders.pop(pid, None)
            if not holders:
                del self._by_size[old]
        if new:
            self._by_size[new][pid] = None

    def append(self, event: dict) -> None:
        pid = event.get("pid") or 0
        queue = self.by_pid.get(pid)
        by_size = self._by_size
        if queue is None:
            queue = self.by_pid[pid] = deque()
        else:  # inline _resize: this runs for every event of a flood
            holders = by_size[len(queue)]
            del holders[pid]
            if not holders:
                del by_size[len(queue)]
        queue.append(event)
        size = len(queue)
        by_size[size][pid] = None
        if size > self._largest:
            self._largest = size
        self.total += 1
        if self.total > self.max_events:
            self._evict_from_largest()

    def _evict_from_largest(self) -> None:
        largest = self._largest
        by_size = self._by_size
        holders = by_size[largest]
        victim = next(iter(holders))
        queue = self.by_pid[victim]
        queue.popleft()
        self.total -= 1
        self.evicted += 1
        del holders[victim]
        if not holders:
            del by_size[largest]
            self._largest = largest - 1  # the victim itself now holds largest - 1 (or nothing was left)
        if queue:
            by_size[largest - 1][victim] = None
        else:
            del self.by_pid[victim]

    def expire(self, horizon_ns: int) -> None:
        """Forget events at or before ``horizon_ns``."""
        for pid in list(self.by_pid):
            queue = self.by_pid[pid]
            before = len(queue)
            while queue and (queue[0].get("ts") or horizon_ns + 1) <= horizon_ns:
                queue.popleft()
            if len(queue) != before:
                self.total -= before - len(queue)
                self._resize(pid, before, len(queue))
                if not queue:
                    del self.by_pid[pid]
        self._largest = max(self._by_size, default=0)

    def events(self) -> list[dict]:
        out: list[dict] = []
        for queue in self.by_pid.values():
            out.extend(queue)
        return out

    def __len__(self) -> int:
        return self.total


class QueryFacts:
    """What the rules look for among the window's queries, found in one pass.

    Most queries are answered, fast, NOERROR and plain UDP: the rules need the few that are
    not, plus per-server latencies and per-(name, type) counts."""

    __slots__ = ("unanswered", "nxdomain", "truncated", "fallbacks", "same_port", "server_latencies",
                 "name_counts")

    def __init__(self, queries: list[dict]):
        self.unanswered: list[dict] = []  # answered is False, with a server
        self.nxdomain: list[dict] = []
        self.truncated: list[dict] = []  # TC answers
        self.fallbacks: list[dict] = []  # TCP retries after a truncated answer
        self.same_port: list[dict] = []  # A/AAAA flagged as sent in parallel from one port
        self.server_latencies: dict = defaultdict(list)  # server -> latencies of its UDP answers
        counts: Counter = Counter()  # (qname as sent, qtype) of first UDP transmissions
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

    def case_folded_counts(self) -> Counter:
        """(lower-case qname, qtype) -> queries (0x20-randomised names count as one)."""
        folded: Counter = Counter()
        for (qname, qtype), n in self.name_counts.items():
            folded[(str(qname).lower(), qtype)] += n
        return folded


class Window:
    """The events of the last window, by kind, with a few derived views the rules share."""

    def __init__(self, events_by_kind: dict[str, list[dict]], now_ns: int, window_ns: int = WINDOW_NS,
                 gai_traced: bool | None = None, by_pid: dict[str, dict] | None = None):
        self.by_kind = events_by_kind
        self.by_pid = by_pid  # kind -> pid -> that process's events in time order (the engine's buffers)
        self.now_ns = now_ns
        self.window_ns = window_ns
        self.gai_traced = bool(events_by_kind.get("gai")) if gai_traced is None else gai_traced
        self._queries: list[dict] | None = None
        self._resolv_by_pid: dict | None = None
        self._latencies_by_pid: dict | None = None
        self._queries_by_process: dict | None = None
        self._facts: QueryFacts | None = None
        self._dns_lost: int | None = None
        self._lookups_by_pid: dict | None = None
        self._via: dict | None = None

    def kind(self, name: str) -> list[dict]:
        return self.by_kind.get(name, [])

    @property
    def window_s(self) -> float:
        return self.window_ns / 1e9

    def queries(self) -> list[dict]:
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

    def queries_by_process(self) -> dict[tuple, list[dict]]:
        """``queries()`` grouped by (pid, comm), computed once for every rule."""
        if self._queries_by_process is None:
            if len(self.queries()) == len(self.kind("dns")):  # no query only a lookup event holds
                self._queries_by_process = self.by_process("dns")
            else:
                self._queries_by_process = _by_process(self.queries())
        return self._queries_by_process

    def by_process(self, kind: str) -> dict[tuple, list]:
        """Events of ``kind`` by (pid, comm): the engine's per-process buffers when there are some."""
        buffers = self.by_pid.get(kind) if self.by_pid is not None else None
        if buffers is None:
            return _by_process(self.kind(kind))
        groups = {}
        for pid, events in buffers.items():
            if not pid:
                continue
            if _name(events[0]) == _name(events[-1]):  # one program (comm changes on exec)
                groups[(pid, _name(events[0]))] = events
            else:  # the process exec'd another program: one group per comm, as _by_process makes
                groups.update(_by_process(events))
        return groups

    def dns_records_lost(self) -> int:
        """DNS records the agent itself lost in the window (ring buffer full, evicted in-flight
        queries...): answers among them look like silence, so absence-based rules must say so."""
        if self._dns_lost is None:
            self._dns_lost = sum(int(e.get("dns_lost") or 0) for e in self.kind("agent"))
        return self._dns_lost

    def lookups(self) -> list[dict]:
        """Whole lookups: lookup events, or gai calls when the lookups signal is not there."""
        return self.kind("lookup") or self.kind("gai")

    def process_resolv(self, pid) -> dict:
        """nameservers / options / search of a process, from any resolution event that carries them."""
        if self._resolv_by_pid is None:
            self._resolv_by_pid = {}
        if pid not in self._resolv_by_pid:
            self._resolv_by_pid[pid] = self._resolv_event(pid)
        event = self._resolv_by_pid[pid]
        return self._resolv_of(event) if event is not None else {"nameservers": [], "resolv_options": [],
                                                                  "search": []}

    def _resolv_event(self, pid) -> dict | None:
        for kind in ("lookup", "gai", "dns"):  # lookup events are the richest; the latest one wins
            if self.by_pid is None:  # a recorded stream: group it once
                self.by_pid = {}
                for name, events in self.by_kind.items():
                    groups = self.by_pid[name] = defaultdict(list)
                    for e in events:
                        groups[e.get("pid") or 0].append(e)
            for e in reversed(self.by_pid.get(kind, {}).get(pid or 0, ())):
                if e.get("nameservers") or isinstance(e.get("resolv_conf"), dict):
                    return e
        return None

    @staticmethod
    def _resolv_of(e: dict) -> dict:
        """From the enricher's fields, or from the lookups signal's ``resolv_conf`` dict."""
        if e.get("nameservers"):
            return {"nameservers": list(e["nameservers"]), "resolv_options": list(e.get("resolv_options") or []),
                    "search": list(e.get("search") or [])}
        rc = e.get("resolv_conf") or {}
        options = [f"{k}:{rc[k]}" for k in ("ndots", "timeout", "attempts") if rc.get(k) is not None]
        options += [k.replace("_", "-") for k in ("rotate", "single_request", "single_request_reopen", "use_vc",
                                                  "edns0") if rc.get(k)]
        return {"nameservers": list(rc.get("nameservers") or []), "resolv_options": options,
                "search": list(rc.get("search") or [])}

    def slow_lookups_of(self, pid) -> list[int]:
        """Latencies of the process's lookups (those that waited for no timeout count as they were)."""
        if self._latencies_by_pid is None:
            self._latencies_by_pid = defaultdict(list)
            for e in self.lookups():
                if e.get("latency_ns"):
                    self._latencies_by_pid[e.get("pid")].append(int(e["latency_ns"]))
        return sorted(self._latencies_by_pid.get(pid, ()))

    def lookups_of(self, pid) -> list[dict]:
        """The process's ``lookup`` events (not gai calls: those carry no resolver model)."""
        if self._lookups_by_pid is None:
            groups: dict = defaultdict(list)
            for e in self.kind("lookup"):
                groups[e.get("pid")].append(e)
            self._lookups_by_pid = groups
        return self._lookups_by_pid.get(pid, [])

    def resolver_of(self, pid) -> str | None:
        """The resolver model the lookups signal named for the process (None: not stated)."""
        for e in reversed(self.lookups_of(pid)):
            if e.get("resolver"):
                return e["resolver"]
        return None

    def caches_used(self) -> dict[tuple, dict]:
        """(app pid, nameserver) -> the node-local process serving it (``via`` of the app's lookups)."""
        if self._via is None:
            self._via = {}
            for e in self.kind("lookup"):
                via = e.get("via")
                if isinstance(via, dict) and via.get("server"):
                    self._via[(e.get("pid"), via["server"])] = via
        return self._via

    def conntrack_totals(self) -> dict[str, int]:
        totals: Counter = Counter()
        for e in self.kind("conntrack"):
            for name in CONNTRACK_COUNTERS:
                totals[name] += int(e.get(name) or 0)
        return dict(totals)


# --- rules -----------------------------------------------------------------------------


def rule_dead_nameserver(w: Window) -> list[Finding]:
    # Per (server, process): the same address may be a different server in another network
    # namespace, so "never answered" is judged for the queries of each process.
    # Unanswered queries are few: find them first, then look only at those processes' answers.
    sent: dict[tuple, list[dict]] = defaultdict(list)
    for q in w.facts().unanswered:
        sent[(q["server"], q.get("pid"))].append(q)
    if not sent:
        return []
    answered_for: dict[object, Counter] = defaultdict(Counter)
    suspects = {pid for (_, pid), lost in sent.items() if len(lost) >= 2}
    for (pid, _comm), queries in w.queries_by_process().items():
        if pid in suspects:
            counter = answered_for[pid]
            for q in queries:
                if q.get("server") and q.get("answered") is not False and (q.get("answered") or q.get("rcode")):
                    counter[q["server"]] += 1
    findings = []
    caches = w.caches_used()
    for (server, pid), lost in sent.items():
        answered = answered_for[pid]
        if len(lost) < 2 or answered[server]:
            continue
        if (pid, server) in caches:
            continue  # a cache on this node: local-cache-upstream looks behind it
        top = _top_process(lost)
        resolv = w.process_resolv(top["pid"])
        nameservers = resolv["nameservers"]
        position = nameservers.index(server) if server in nameservers else None
        others_answered = [ns for ns in nameservers if ns != server and answered[ns]]
        other_servers = sorted(s for s in answered if s != server)
        pids, comms, containers = _affected(lost)
        lookups = w.lookups_of(top["pid"])
        resolver = w.resolver_of(top["pid"])
        if lookups:
            # Only lookups that sat through a timeout support a latency claim (musl waits for none).
            waited = [e for e in lookups if _waited(e)]
            latencies = sorted(int(e["latency_ns"]) for e in lookups if e.get("latency_ns"))
            slow = sorted(int(e["latency_ns"]) for e in waited if (e.get("latency_ns") or 0) >= 0.5e9)
            did_not_wait = not waited
            confidence = _confidence(lookups)
        else:  # no lookup events (yet): gai calls if any, and what its queries show
            waited = []
            latencies = w.slow_lookups_of(top["pid"])
            slow = [lat for lat in latencies if lat >= 0.5e9]
            own = next((qs for (p, _), qs in w.queries_by_process().items() if p == top["pid"]), [])
            parallel = model_from_wire(own)  # musl's signature: one question to every server at once
            did_not_wait = parallel is not None
            resolver = parallel.name if parallel is not None else resolver
            confidence = "measured" if w.kind("gai") and latencies else ("wire" if resolver else "wire-only")
        who = proc_label(top["pid"], top["comm"], top["container"])
        head = f"lookups by {who}"
        if did_not_wait:
            head = f"{who} did not wait for it"
            if resolver == "musl":
                head += " (musl asks every nameserver at once; the first answer wins)"
            if latencies:
                head += f", its lookups take {_dur(statistics.median(latencies))}"
        else:
            head += f" take {_dur(statistics.median(slow))}" if slow else " wait for timeouts"
        where = f" ({ORDINALS[position]} in its resolv.conf)" if position is not None and position < 4 else ""
        summary = f"{head}: nameserver {server}{where} never answered {len(lost)} queries"
        if others_answered:
            summary += f"; {others_answered[0]} answered"
        elif other_servers:
            summary += f"; {other_servers[0]} answered"
        summary += f". Remove or fix nameserver {server}."
        if confidence == "wire-only":
            summary += WIRE_ONLY_NOTE
        timeout = _timeout_s(resolv["resolv_options"])
        evidence = {
            "server": server, "unanswered": len(lost), "answered_by_server": 0,
            "other_servers_answered": {s: answered[s] for s in other_servers[:8]},
            "resolv_conf": _resolv_path(top["pid"]), "resolv_conf_line": f"nameserver {server}",
            "nameservers": nameservers, "position": position, "timeout_s": timeout,
            "qnames": [n for n, _ in Counter(q.get("qname") for q in lost).most_common(5)],
            "lookup_latency_ns": {"median": statistics.median(slow) if slow else None,
                                  "max": max(latencies) if latencies else None},
        }
        fix = (f"Remove or replace 'nameserver {server}' in the resolv.conf this process sees "
               f"({_resolv_path(top['pid'])}); for containers fix the DNS settings the runtime writes "
               f"(Docker --dns, Nomad network.dns, Kubernetes dnsPolicy/dnsConfig)."
               + (" Meanwhile 'options timeout:1' caps the wait at 1 s per attempt." if timeout > 1 else ""))
        evidence["resolver"] = resolver
        evidence["lookups_waited"] = len(waited) if lookups else None
        severity = "info" if did_not_wait else "critical" if position == 0 else "warning"
        severity, summary = _unreliable(w, len(lost), severity, summary, evidence)
        findings.append(Finding("dead-nameserver", severity, summary, evidence, fix, key=f"{server}/{pid}",
                                pids=pids, comms=comms, containers=containers, confidence=confidence))
    return findings


def rule_slow_nameserver(w: Window, threshold_ns: int = 300_000_000) -> list[Finding]:
    # Latencies (numbers) per server first; the queries only for the rare server that is slow.
    latencies = w.facts().server_latencies
    findings = []
    for server, values in latencies.items():
        if len(values) < 3:
            continue
        median = statistics.median(int(v) for v in values)
        if median < threshold_ns:
            continue
        answers = [q for q in w.queries() if q.get("server") == server and q.get("answered") is not False
                   and q.get("latency_ns") is not None and q.get("proto", "udp") == "udp"]
        pids, comms, containers = _affected(answers)
        top = _top_process(answers)
        summary = (f"nameserver {server} answers slowly: median {_dur(median)} over {len(answers)} answers "
                   f"(queries by {proc_label(top['pid'], top['comm'], top['container'])} and others)")
        evidence = {"server": server, "answers": len(answers), "median_ns": median,
                    "max_ns": max(int(q["latency_ns"]) for q in answers)}
        fix = (f"Find out why {server} is slow (overloaded, slow upstream, packet loss on the way); "
               f"list a faster nameserver first or run a node-local cache.")
        findings.append(Finding("slow-nameserver", "warning", summary, evidence, fix, key=server,
                                pids=pids, comms=comms, containers=containers))
    return findings


def rule_timeout_multiple_latency(w: Window) -> list[Finding]:
    findings = []
    # No timeout is under 1 s: processes without a lookup of 0.8 s or more cannot match.
    candidates = {e.get("pid") for e in w.lookups() if (e.get("latency_ns") or 0) >= 0.8e9}
    for (pid, comm), lookups in w.by_process("lookup" if w.kind("lookup") else "gai").items():
        if pid not in candidates:
            continue
        resolv = w.process_resolv(pid)
        timeout_ns = _timeout_s(resolv["resolv_options"]) * 1e9
        slow = [e for e in lookups if (e.get("latency_ns") or 0) >= 0.8 * timeout_ns and _waited(e)]
        if len(slow) < 2:
            continue
        tolerance = max(0.15 * timeout_ns, 0.25e9)
        multiples = []
        for e in slow:
            k = round(e["latency_ns"] / timeout_ns)
            if k >= 1 and abs(e["latency_ns"] - k * timeout_ns) <= tolerance:
                multiples.append((k, e))
        if len(multiples) < 2 or len(multiples) < 0.6 * len(slow):
            continue
        ks = Counter(k for k, _ in multiples)
        shown = ", ".join(f"{k * timeout_ns / 1e9:g} s x{n}" for k, n in sorted(ks.items()))
        container = _container_of(lookups)
        summary = (f"{len(multiples)} of {len(lookups)} lookups by {proc_label(pid, comm, container)} took whole "
                   f"multiples of its {timeout_ns / 1e9:g} s resolver timeout ({shown}): queries are lost and "
                   f"retried only after the timeout")
        evidence = {"timeout_s": timeout_ns / 1e9, "lookups": len(lookups), "at_timeout_multiples": len(multiples),
                    "multiples": dict(sorted(ks.items())),
                    "names": [n for n, _ in Counter(e.get("name") for _, e in multiples).most_common(5)],
                    "resolv_options": resolv["resolv_options"], "nameservers": resolv["nameservers"]}
        fix = ("See the other findings for which query is lost (dead nameserver, conntrack race, dropped SYNs); "
               "until fixed, 'options timeout:1 attempts:2' in resolv.conf shortens each wait.")
        severity = "warning"
        # Lookups grouped from the wire (no libc call measured) end where their last answer was
        # seen: with DNS records lost by the agent, a "timeout" may be an answer it missed.
        from_wire = sum(1 for _, e in multiples if e.get("source") == "wire")
        confidence = _confidence([e for _, e in multiples])
        if confidence == "wire-only":
            summary += WIRE_ONLY_NOTE
        if from_wire:
            severity, summary = _unreliable(w, from_wire, severity, summary, evidence)
        finding = Finding.of_process("timeout-multiple-latency", severity, summary, evidence, fix,
                                     pid, comm, container)
        finding.confidence = confidence
        findings.append(finding)
    return findings


def rule_truncated_not_cached(w: Window, min_repeats: int = 5) -> list[Finding]:
    truncated: dict[tuple, list[dict]] = defaultdict(list)
    for q in w.facts().truncated:
        truncated[(q.get("qname"), q.get("server"))].append(q)
    findings = []
    fallbacks_by_name = Counter(q.get("qname") for q in w.facts().fallbacks if q.get("tcp_fallback"))
    for (qname, server), answers in truncated.items():
        if len(answers) < min_repeats:
            continue
        fallbacks = fallbacks_by_name.get(qname, 0)
        pids, comms, containers = _affected(answers)
        top = _top_process(answers)
        asker = proc_label(top["pid"], top["comm"], top["container"])
        if _is_dns_server_comm(top["comm"]):
            why = (f"{top['comm']} does not cache truncated answers, so every lookup of the name goes "
                   f"upstream again")
        else:
            why = "nothing caches the truncated answer, so every lookup goes to the server again"
        summary = (f"{len(answers)} truncated (TC) answers for {qname} from {server} in {w.window_s:g} s, "
                   f"asked by {asker}: {why} (and {fallbacks} retries over TCP)")
        evidence = {"qname": qname, "server": server, "tc_answers": len(answers), "tcp_fallbacks": fallbacks,
                    "per_second": round(len(answers) / w.window_s, 2)}
        fix = (f"Make the answer for {qname} fit in one UDP datagram: return fewer records (Consul: "
               f"dns_config.a_record_limit / enable_truncate=false), or allow larger EDNS0 answers "
               f"(resolv.conf 'options edns0', dnsmasq --edns-packet-max); a cache that stores TCP "
               f"answers (unbound, CoreDNS) avoids the upstream storm.")
        findings.append(Finding("truncated-not-cached", "warning", summary, evidence, fix,
                                key=f"{qname}@{server}", pids=pids, comms=comms, containers=containers))
    return findings


def rule_tcp_fallback(w: Window, min_fallbacks: int = 5) -> list[Finding]:
    findings = []
    fallbacks = w.facts().fallbacks
    for (pid, comm), items in _by_process(fallbacks).items():
        if len(items) < min_fallbacks:
            continue
        servers = Counter(q.get("server") for q in items)
        latencies = [int(q["latency_ns"]) for q in items if q.get("latency_ns")]
        container = _container_of(items)
        summary = (f"{proc_label(pid, comm, container)} fell back to TCP {len(items)} times in {w.window_s:g} s "
                   f"after truncated UDP answers from {', '.join(s for s, _ in servers.most_common(3))}"
                   + (f" (TCP answers take {_dur(statistics.median(latencies))})" if latencies else ""))
        evidence = {"tcp_fallbacks": len(items), "servers": dict(servers.most_common(8)),
                    "qnames": [n for n, _ in Counter(q.get("qname") for q in items).most_common(5)]}
        fix = ("Keep answers under the UDP size (fewer records, EDNS0) or cache them: each fallback costs a TCP "
               "handshake and a second round trip.")
        findings.append(Finding.of_process("tcp-fallback", "info", summary, evidence, fix, pid, comm, container))
    return findings


def rule_syn_retransmits(w: Window, min_retries: int = 3) -> list[Finding]:
    by_dest: dict[tuple, list[dict]] = defaultdict(list)
    for e in w.kind("syn_retry"):
        by_dest[(e.get("daddr"), e.get("dport"))].append(e)
    connects = defaultdict(list)
    for e in w.kind("connect"):
        connects[(e.get("daddr"), e.get("dport"))].append(e)
    findings = []
    for (daddr, dport), retries in by_dest.items():
        if len(retries) < min_retries:
            continue
        pids, comms, containers = _affected(retries)
        top = _top_process(retries)
        who = proc_label(top["pid"], top["comm"], top["container"]) if top["pid"] else "processes on this node"
        outcomes = Counter(c.get("result") for c in connects[(daddr, dport)])
        latencies = [int(c["latency_ns"]) for c in connects[(daddr, dport)] if c.get("latency_ns")]
        is_dns = dport in DNS_PORTS
        summary = f"{who} retransmitted {len(retries)} SYNs to {daddr}:{dport} in {w.window_s:g} s"
        waiting_apps = sorted({(e.get("pid"), _name(e)) for e in w.kind("lookup")
                               if isinstance(e.get("via"), dict) and e["via"].get("pid") == top["pid"]}) \
            if is_dns and top["pid"] else []
        if is_dns:
            summary += " (a DNS server over TCP): lookups over TCP wait for the connection"
            if waiting_apps:  # the retrying process is a node-local cache: name who waits behind it
                summary += ("; it is the local cache of " +
                            ", ".join(proc_label(pid, comm) for pid, comm in waiting_apps[:3]))
                pids = pids + [pid for pid, _ in waiting_apps if pid not in pids][:3]
        else:
            summary += ": the destination does not answer connection attempts"
        if latencies:
            summary += f"; connects took up to {_dur(max(latencies))}"
        if outcomes:
            summary += " (" + ", ".join(f"{n} {r}" for r, n in outcomes.most_common()) + ")"
        evidence = {"daddr": daddr, "dport": dport, "syn_retransmits": len(retries),
                    "max_retry": max(int(e.get("retry") or 0) for e in retries),
                    "connect_results": dict(outcomes), "per_second": round(len(retries) / w.window_s, 2)}
        if is_dns:
            fix = (f"The DNS server {daddr} drops or rate-limits TCP: fix its TCP limits/firewall, or stop forcing "
                   f"TCP (NodeLocal DNSCache: prefer_udp instead of force_tcp; remove 'options use-vc').")
        else:
            fix = (f"Check that {daddr}:{dport} still exists and accepts connections (a deleted pod IP? a firewall "
                   f"dropping SYNs?); make clients back off instead of reconnecting in a tight loop.")
        severity = "critical" if len(retries) >= 20 else "warning"
        findings.append(Finding("syn-retransmits", severity, summary, evidence, fix, key=f"{daddr}:{dport}",
                                pids=pids, comms=comms, containers=containers))
    return findings


_NO_ADDRESS_RE = re.compile(r"no (ipv4 )?address|without (an )?(ipv4 )?address|has no ipv4", re.IGNORECASE)


def rule_rp_filter(w: Window) -> list[Finding]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for e in w.kind("drop"):
        if "RPFILTER" in str(e.get("reason", "")).upper():
            groups[str(e.get("iif_name") or e.get("iif") or "?")].append(e)
    findings = []
    for iface, drops in groups.items():
        count = sum(int(e.get("count") or 1) for e in drops)
        no_address = any(_NO_ADDRESS_RE.search(str(e.get("why") or "")) or e.get("iif_has_ipv4") is False
                         for e in drops)
        flows = Counter((e.get("saddr"), e.get("daddr")) for e in drops)
        (saddr, daddr), _ = flows.most_common(1)[0]
        syns_to = [e for e in w.kind("syn_retry") if e.get("daddr") in (saddr, daddr)]
        pids, comms, containers = _affected(syns_to or drops)
        why = next((str(e["why"]) for e in drops if e.get("why")), "")
        summary = (f"{count} packets from {saddr} to {daddr} arriving on {iface} were dropped by reverse-path "
                   f"filtering in {w.window_s:g} s")
        if no_address:
            summary += (f": {iface} has no IPv4 address, so loose rp_filter acts as strict "
                        f"(the source check fails)")
        if syns_to:
            top = _top_process(syns_to)
            summary += (f"; {proc_label(top['pid'], top['comm'], top['container'])} keeps retrying "
                        f"({len(syns_to)} SYN retransmits)")
        evidence = {"iif": iface, "drops": count, "flows": [f"{s} -> {d}: {n}" for (s, d), n in flows.most_common(5)],
                    "why": why, "return_dev": next((e.get("return_dev") for e in drops if e.get("return_dev")), None),
                    "syn_retransmits": len(syns_to)}
        if no_address:
            fix = (f"Give {iface} an IPv4 address, or set net.ipv4.conf.{iface}.rp_filter=0 (the effective value "
                   f"is max(conf.all, conf.{iface})); and stop clients reconnecting to {daddr} in a tight loop.")
            rule, severity = "rp-filter-no-address", "critical"
        else:
            fix = (f"The return route to {saddr} does not go out through {iface}: fix routing asymmetry, or relax "
                   f"rp_filter on {iface} (net.ipv4.conf.{iface}.rp_filter=2, effective max(all, dev)).")
            rule, severity = "rp-filter-drops", "warning"
        findings.append(Finding(rule, severity, summary, evidence, fix, key=iface,
                                pids=pids, comms=comms, containers=containers))
    return findings


def _same_port_groups(w: Window) -> tuple[list[dict], list[dict]]:
    """Unanswered DNS queries of A+AAAA pairs sent from one port: (one of the pair lost, both lost).

    The seed-004 race loses *one* query of the pair (its conntrack entry clashed with its
    partner's) while the other is answered. When both are lost, the port pair is not the
    cause: every new flow is refused (an SNAT port collision, a full table), and
    single-request-reopen would not help. Queries are grouped by (pid, source port, name).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    flagged = {(q.get("pid"), q.get("sport"), str(q.get("qname") or "").lower()) for q in w.facts().same_port}
    if not flagged:
        return [], []
    flagged_pids = {key[0] for key in flagged}
    for q in w.queries():
        if q.get("pid") not in flagged_pids or q.get("qtype") not in ("A", "AAAA"):
            continue
        key = (q.get("pid"), q.get("sport"), str(q.get("qname") or "").lower())
        if key in flagged:
            groups[key].append(q)
    one_lost, both_lost = [], []
    for key in flagged:
        queries = groups[key]
        lost = [q for q in queries if q.get("answered") is False]
        if not lost:
            continue
        answered_types = {q.get("qtype") for q in queries if q.get("answered") is not False}
        if answered_types - {q.get("qtype") for q in lost}:
            one_lost.extend(lost)
        elif not answered_types:
            both_lost.extend(lost)
    return one_lost, both_lost


def _same_port_losses(w: Window) -> list[dict]:
    """Queries lost as one half of a parallel A+AAAA pair on one port (the race's signature)."""
    return _same_port_groups(w)[0]


def _nat_collision_findings(w: Window, both_lost: list[dict], insert_failed: int, netns: list[str],
                            totals: dict) -> list[Finding]:
    """Per process: both queries of its same-port pairs lost while conntrack refused inserts.

    Not the A/AAAA race (that loses one of the pair): whole new flows are refused, typically
    an SNAT rule with too few source ports; single-request-reopen would not help.
    """
    findings = []
    for (pid, comm), lost in _by_process(both_lost).items():
        container = _container_of(lost)
        servers = Counter(str(q.get("server")) for q in lost)
        resolv = w.process_resolv(pid)
        timeout = _timeout_s(resolv["resolv_options"])
        slow = [lat for lat in w.slow_lookups_of(pid) if lat >= 0.8 * timeout * 1e9]
        pairs = len({(q.get("sport"), str(q.get("qname") or "").lower()) for q in lost})
        summary = (f"DNS queries by {proc_label(pid, comm, container)} to {servers.most_common(1)[0][0]} vanish: "
                   f"both the A and the AAAA query of {pairs} lookups were lost while conntrack refused "
                   f"{insert_failed} new entries (insert_failed" + (f" in netns {', '.join(netns)}" if netns else "")
                   + f") in {w.window_s:g} s, so the resolver waits its {timeout:g} s timeout"
                   + (f" ({len(slow)} lookups took ≥ {timeout:g} s)" if slow else "")
                   + ". Both halves of each pair are lost, so this is not the A/AAAA race: new flows collide "
                     "on their NAT mapping (an SNAT rule with too few source ports)")
        fix = ("Give the SNAT/MASQUERADE rule on the path to the DNS server a port range with random allocation "
               "(--random-fully) instead of a single port, or send DNS to the server without SNAT; "
               "single-request-reopen will not help, since every new flow collides.")
        evidence = {**totals, "netns": netns, "both_of_pair_lost": len(lost), "pairs": pairs,
                    "servers": dict(servers.most_common(5)), "resolv_options": resolv["resolv_options"]}
        severity, summary = _unreliable(w, len(lost), "critical", summary, evidence)
        findings.append(Finding.of_process("conntrack-insert-failed", severity, summary, evidence, fix,
                                           pid, comm, container, key=f"insert_failed/{pid}"))
    return findings


def rule_conntrack(w: Window) -> list[Finding]:
    totals = w.conntrack_totals()
    findings = []
    insert_failed = totals.get("insert_failed", 0)
    clash = totals.get("clash_resolve", 0)
    netns = sorted({str(e.get("netns")) for e in w.kind("conntrack")
                    if e.get("insert_failed") or e.get("drop") or e.get("early_drop")})
    # A packet that conntrack/NAT refused to confirm is freed in nf_hook_slow (a firewall rule's
    # DROP shows up in the table's chain function instead): DNS queries lost that way, per process.
    refused = [e for e in w.kind("drop") if e.get("reason") == "NETFILTER_DROP" and e.get("location") == "nf_hook_slow"
               and e.get("dport") in DNS_PORTS and e.get("pid")]
    if refused:
        top = _top_process(refused)
        pids, comms, containers = _affected(refused)
        dests = Counter(f"{e.get('daddr')}:{e.get('dport')}" for e in refused)
        count = sum(int(e.get("count") or 1) for e in refused)
        summary = (f"{count} DNS queries by {proc_label(top['pid'], top['comm'], top['container'])} to "
                   f"{dests.most_common(1)[0][0]} were dropped by netfilter as they were sent (conntrack/NAT could "
                   f"not insert their entry) in {w.window_s:g} s: lookups fail or wait for the resolver timeout")
        evidence = {"dropped_queries": count, "destinations": dict(dests.most_common(5)),
                    "location": "nf_hook_slow", "source_ports": len({e.get("sport") for e in refused}), **totals}
        fix = ("Look for a NAT rule mapping many flows onto one tuple (SNAT to a single port) or a full table; "
               "use 'options single-request-reopen' for the A/AAAA race, MASQUERADE --random-fully for SNAT "
               "port collisions; gRPC's c-ares resolver needs GRPC_DNS_RESOLVER=native.")
        findings.append(Finding("conntrack-insert-failed", "critical", summary, evidence, fix,
                                key=f"refused/{top['pid']}", pids=pids, comms=comms, containers=containers))
    if insert_failed:
        losses, both_lost = _same_port_groups(w)
        if both_lost:
            findings += _nat_collision_findings(w, both_lost, insert_failed, netns, totals)
        if losses or not both_lost:
            pids, comms, containers = _affected(losses or refused)
            summary = (f"conntrack refused {insert_failed} new entries (insert_failed) in {w.window_s:g} s"
                       + (f" in netns {', '.join(netns)}" if netns else "")
                       + f": the first packet of those flows was dropped ({clash} other clashes were resolved "
                         f"without loss)")
            if losses:
                summary += (f"; {len(losses)} DNS queries sent as A+AAAA on one port went unanswered "
                            f"(by {', '.join(comms[:3])})")
            evidence = {**totals, "netns": netns, "same_port_losses": len(losses)}
            fix = ("If DNS is affected: 'options single-request-reopen' (or use-vc) in resolv.conf so A and AAAA "
                   "leave from different ports; for gRPC's c-ares resolver set GRPC_DNS_RESOLVER=native. For SNAT "
                   "port collisions: enable random port allocation (iptables MASQUERADE --random-fully).")
            findings.append(Finding("conntrack-insert-failed", "critical" if losses else "warning", summary,
                                    evidence, fix, key="insert_failed", pids=pids, comms=comms,
                                    containers=containers))
    # The drop counter also counts packets lost to insert failures: only the excess means "no room".
    full_drops = max(0, totals.get("drop", 0) - insert_failed) + totals.get("early_drop", 0)
    nearly_full = [e for e in w.kind("conntrack") if e.get("count") and e.get("max")
                   and int(e["count"]) >= 0.9 * int(e["max"])]
    if full_drops or nearly_full:
        latest = nearly_full[-1] if nearly_full else None
        summary = (f"the conntrack table is full: {full_drops} packets dropped for lack of room in {w.window_s:g} s"
                   + (f" ({latest['count']}/{latest['max']} entries)" if latest else ""))
        evidence = {"drop": totals.get("drop", 0), "early_drop": totals.get("early_drop", 0),
                    "count": latest["count"] if latest else None, "max": latest["max"] if latest else None,
                    "netns": netns}
        fix = ("Raise net.netfilter.nf_conntrack_max (and the hash size), shorten timeouts of idle flows, and find "
               "the process opening connections in a storm (see syn-retransmits).")
        findings.append(Finding("conntrack-table-full", "critical", summary, evidence, fix, key="table-full"))
    return findings


def rule_aaaa_same_port_race(w: Window) -> list[Finding]:
    """Seed 004: one query of a same-port A+AAAA pair lost (its conntrack entry lost the race).

    Kernels since 5.x resolve most of these clashes (clash_resolve rises instead of
    insert_failed, nothing is lost): on them this rule mostly stays quiet, and both-lost
    pairs are reported by ``conntrack-insert-failed`` as the NAT collision they are.
    """
    losses = _same_port_losses(w)
    totals = w.conntrack_totals()
    insert_failed = totals.get("insert_failed", 0)
    findings = []
    for (pid, comm), lost in _by_process(losses).items():
        if len(lost) < 2 and not (lost and insert_failed):
            continue
        resolv = w.process_resolv(pid)
        if _has_option(resolv["resolv_options"], "single-request-reopen", "single-request", "use-vc"):
            continue  # already configured: the pairs seen are something else
        bypass = w.gai_traced and not any(e.get("pid") == pid for e in w.kind("gai"))
        timeout = _timeout_s(resolv["resolv_options"])
        slow = [lat for lat in w.slow_lookups_of(pid) if lat >= 0.8 * timeout * 1e9]
        container = _container_of(lost)
        ports = Counter(q.get("sport") for q in lost)
        summary = (f"{proc_label(pid, comm, container)} sends A and AAAA in parallel from one socket and "
                   f"{len(lost)} of those queries were never answered"
                   + (f" while conntrack refused {insert_failed} inserts" if insert_failed else "")
                   + f": the conntrack race drops one of the pair and the resolver waits its {timeout:g} s timeout"
                   + (f" ({len(slow)} lookups took ≥ {timeout:g} s)" if slow else ""))
        if bypass:
            summary += "; this process resolves without libc, so resolv.conf options may not help"
        evidence = {"lost_same_port_queries": len(lost), "qtypes": dict(Counter(q.get("qtype") for q in lost)),
                    "ports": [p for p, _ in ports.most_common(5)], "insert_failed": insert_failed,
                    "clash_resolve": totals.get("clash_resolve", 0),
                    "servers": sorted({str(q.get("server")) for q in lost}),
                    "resolv_options": resolv["resolv_options"], "bypasses_libc": bypass}
        fix = ("Add 'options single-request-reopen' to resolv.conf (Kubernetes: pod dnsConfig.options) so A and "
               "AAAA use different ports, or 'use-vc'; gRPC clients on c-ares need GRPC_DNS_RESOLVER=native to "
               "honour it.")
        severity, summary = _unreliable(w, len(lost), "critical", summary, evidence)
        findings.append(Finding.of_process("aaaa-same-port-race", severity, summary, evidence, fix,
                                           pid, comm, container))
    return findings


def rule_ndots_nxdomain_storm(w: Window, min_nxdomain: int = 10) -> list[Finding]:
    findings = []
    nx_per_pid = Counter(q.get("pid") for q in w.facts().nxdomain)
    for (pid, comm), all_queries in w.queries_by_process().items():
        if nx_per_pid.get(pid, 0) < min_nxdomain:
            continue
        nx = [q for q in all_queries if q.get("rcode") == "NXDOMAIN" and q.get("qname")]
        if len(nx) < min_nxdomain:
            continue
        queries = [q for q in all_queries if q.get("answered") is not False]
        if len(nx) < min_nxdomain or len(nx) < 0.5 * len(queries):
            continue
        search = [s.rstrip(".").lower() for s in (queries[0].get("search") or w.process_resolv(pid)["search"])]
        answered_names = {str(q["qname"]).rstrip(".").lower() for q in queries
                          if q.get("rcode") == "NOERROR" and q.get("qname")}
        expansions = []
        for q in nx:
            name = str(q["qname"]).rstrip(".").lower()
            by_search = any(name.endswith("." + s) for s in search)
            by_base = any(name.startswith(base + ".") for base in answered_names)
            if by_search or by_base:
                expansions.append(name)
        if len(expansions) < min_nxdomain or len(expansions) < 0.5 * len(nx):
            continue
        container = _container_of(queries)
        options = queries[0].get("resolv_options") or w.process_resolv(pid)["resolv_options"]
        ndots = next((o.split(":", 1)[1] for o in options if o.startswith("ndots:")), "1")
        examples = [n for n, _ in Counter(expansions).most_common(3)]
        summary = (f"{len(expansions)} of {len(queries)} queries by {proc_label(pid, comm, container)} in "
                   f"{w.window_s:g} s got NXDOMAIN from search-list expansion (e.g. {examples[0]}): names with "
                   f"fewer than ndots:{ndots} dots are tried with every search domain first")
        evidence = {"nxdomain_expansions": len(expansions), "queries": len(queries), "examples": examples,
                    "search": search, "ndots": ndots,
                    "servers": sorted({str(q.get("server")) for q in nx if q.get("server")})[:8]}
        fix = ("Use fully-qualified names with a trailing dot (e.g. 'api.example.com.'), or lower ndots "
               "('options ndots:1'; Kubernetes: pod dnsConfig.options ndots) or trim the search list.")
        findings.append(Finding.of_process("ndots-nxdomain-storm", "warning", summary, evidence, fix,
                                           pid, comm, container))
    return findings


def rule_cache_miss_storm(w: Window, min_queries: int = 50) -> list[Finding]:
    # Two passes: count every (name, type) cheaply, then gather the queries of the few asked
    # often enough to matter (a node asks tens of thousands of names once or twice a minute).
    floor = max(min_queries, 0.8 * w.window_s)  # below both thresholds whatever the TTL
    asked: dict[tuple, list[dict]] = defaultdict(list)
    if sum(w.facts().name_counts.values()) < floor:
        return []
    frequent = {key for key, n in w.facts().case_folded_counts().items() if n >= floor}
    if frequent:
        for q in w.queries():
            qname = q.get("qname")
            if qname and not q.get("retransmit") and q.get("proto", "udp") == "udp":
                key = (str(qname).lower(), q.get("qtype"))
                if key in frequent:
                    asked[key].append(q)
    findings = []
    cache_pids = {via.get("pid") for via in w.caches_used().values()}
    for (qname, qtype), queries in asked.items():
        if len(queries) < floor:
            continue
        ttls = [int(q["ttl"]) for q in queries if q.get("ttl")]
        ttl = min(ttls) if ttls else None
        expected = (w.window_s / ttl + 1) if ttl else None
        if sum(1 for q in queries if q.get("rcode") == "NXDOMAIN") > 0.5 * len(queries):
            continue  # NXDOMAIN storms are the ndots rule's business
        # Each hop counted on its own: app -> server, cache -> its upstream (a chain is two hops).
        hops: dict[tuple, list[dict]] = defaultdict(list)
        for q in queries:
            from_cache = q.get("pid") in cache_pids or _is_dns_server_comm(q.get("comm"))
            hops[(from_cache, str(q.get("server")))].append(q)
        counted = {f"{'cache' if c else 'app'} -> {srv}": len(qs) for (c, srv), qs in hops.items()}
        storming = [(key, qs) for key, qs in hops.items() if len(qs) >= min_queries
                    and (expected is None or len(qs) >= 4 * expected) and len(qs) / w.window_s >= 0.8]
        for (from_cache, server), hop_queries in storming:
            pids, comms, containers = _affected(hop_queries)
            top = _top_process(hop_queries)
            if not from_cache and (top["pid"], server) in w.caches_used():
                continue  # asked of a cache on this node: its own upstream hop is judged on its own
            who = proc_label(top["pid"], top["comm"], top["container"])
            rate = len(hop_queries) / w.window_s
            if from_cache:
                apps = sum(len(qs) for (c, _), qs in hops.items() if not c)
                why = (f"the cache {top['comm']} (pid {top['pid']}) forwards it upstream to {server} every time "
                       f"instead of answering from cache" + (f" (apps asked it {apps} times)" if apps else ""))
                head = f"{qname} ({qtype}) was asked upstream {len(hop_queries)} times"
            else:
                why = f"nothing between {who} and {server} caches it"
                head = f"{qname} ({qtype}) was asked {len(hop_queries)} times"
            summary = (f"{head} in {w.window_s:g} s ({rate:.1f}/s, hop {'cache' if from_cache else 'app'} -> "
                       f"{server}, mostly by {who})" + (f" although its TTL is {ttl} s" if ttl else "") + f": {why}")
            evidence = {"qname": qname, "qtype": qtype, "queries": len(hop_queries), "per_second": round(rate, 2),
                        "ttl": ttl, "servers": {server: len(hop_queries)}, "hop": "cache" if from_cache else "app",
                        "hops": counted, "truncated": sum(1 for q in hop_queries if q.get("tc"))}
            if from_cache:
                fix = (f"Make {top['comm']} cache the answer: look for answers it refuses to cache (truncated answers "
                       f"it retries over TCP, TTL 0 from the upstream, a cache size of 0) and raise its minimum TTL.")
            else:
                fix = ("Cache the answer: a node-local cache (nscd, systemd-resolved, NodeLocal DNSCache) or the "
                       "application's own.")
            key = f"{qname}/{qtype}" if len(storming) == 1 else f"{qname}/{qtype}@{server}"
            findings.append(Finding("cache-miss-storm", "warning", summary, evidence, fix, key=key,
                                    pids=pids, comms=comms, containers=containers))
    return findings


# How to make a cache use UDP upstream / where its upstream is configured, per program.
CACHE_UDP_HINT = {
    "unbound": "unbound.conf 'tcp-upstream: no'",
    "NodeLocal DNSCache": "Corefile 'forward . <upstream> { prefer_udp }' instead of force_tcp",
    "CoreDNS": "Corefile 'forward . <upstream> { prefer_udp }' instead of force_tcp",
    "dnsmasq": "drop the TCP-only upstream (dnsmasq uses UDP unless the answer is truncated)",
    "systemd-resolved": "resolved.conf DNSOverTLS=no / a reachable DNS=",
}
CACHE_UPSTREAM_CONFIG = {
    "unbound": "forward-addr in unbound.conf", "dnsmasq": "'server=' in dnsmasq.conf",
    "NodeLocal DNSCache": "the forward plugin of its Corefile", "CoreDNS": "the forward plugin of its Corefile",
    "systemd-resolved": "DNS= in resolved.conf", "BIND named": "forwarders in named.conf",
}


def _hop_cause(w: Window, cache: dict, upstream: list[dict]) -> tuple[str, str, dict] | None:
    """What fails behind a node-local cache: (why, fix, evidence), from its own traffic in the window."""
    pid, comm, program = cache.get("pid"), cache.get("comm"), cache.get("program") or cache.get("comm")
    mine = [e for e in w.kind("syn_retry") if (e.get("pid") == pid or (comm and e.get("comm") == comm))
            and e.get("dport") in DNS_PORTS]
    if mine:
        dests = Counter(f"{e.get('daddr')}:{e.get('dport')}" for e in mine)
        dest, _ = dests.most_common(1)[0]
        retries = sum(int(e.get("count") or 1) for e in mine)
        why = (f"{program}'s TCP connections to its upstream {dest} are not answered "
               f"({retries} SYN retransmits in {w.window_s:g} s)")
        fix = (f"Fix {program}'s upstream hop, not the app: {dest.rsplit(':', 1)[0]} drops TCP SYNs on port "
               f"{dest.rsplit(':', 1)[1]}; allow TCP/53 from the cache to it, or let {program} ask over UDP ("
               f"{CACHE_UDP_HINT.get(program, 'its upstream protocol setting')}).")
        return why, fix, {"upstream_syn_retransmits": retries, "upstream": dict(dests.most_common(5))}
    queries = list(upstream) + [q for q in w.queries() if q.get("pid") == pid]
    lost = Counter(q.get("server") for q in queries if q.get("answered") is False and q.get("server"))
    answered = Counter(q.get("server") for q in queries if q.get("answered") and q.get("server"))
    dead = [srv for srv, n in lost.most_common() if n >= 2 and not answered[srv]]
    if dead:
        why = f"{program}'s upstream {dead[0]} never answered {lost[dead[0]]} of its queries"
        fix = (f"Fix or replace the upstream {dead[0]} of {program} "
               f"({CACHE_UPSTREAM_CONFIG.get(program, 'its upstream setting')}).")
        return why, fix, {"upstream_unanswered": dict(lost.most_common(5))}
    failed = Counter(q.get("server") for q in queries if q.get("rcode") == "SERVFAIL")
    if failed:
        srv, n = failed.most_common(1)[0]
        why = f"{program}'s upstream {srv} answered SERVFAIL {n} times"
        fix = f"Find out why {srv} fails for these names (its own upstream, DNSSEC); {program} only relays it."
        return why, fix, {"upstream_servfail": dict(failed.most_common(5))}
    slow = [int(q["latency_ns"]) for q in queries if q.get("answered") and q.get("latency_ns")]
    if len(slow) >= 2 and statistics.median(slow) >= 300_000_000:
        why = f"{program}'s upstream answers take {_dur(statistics.median(slow))}"
        fix = f"Find out why {program}'s upstream is slow, or give it a faster one."
        return why, fix, {"upstream_median_ns": statistics.median(slow)}
    return None


def rule_local_cache_upstream(w: Window) -> list[Finding]:
    """Slow or failing lookups through a cache on this node, blamed on the hop behind it.

    Names the app that waited and the cache; the cause is looked for in the cache's own
    traffic (SYN retransmits to a DNS port, unanswered or failing upstream queries)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in w.kind("lookup"):
        via = e.get("via")
        if isinstance(via, dict) and via.get("pid"):
            groups[(e.get("pid"), _name(e), via.get("pid"), via.get("server"))].append(e)
    findings = []
    for (pid, comm, cache_pid, server), lookups in groups.items():
        bad = [e for e in lookups if e.get("error") not in (None, "", "NOERROR")
               or (e.get("latency_ns") or 0) >= 0.5e9]
        if len(bad) < 2:
            continue
        cache = lookups[-1]["via"]
        program = cache.get("program") or cache.get("comm")
        upstream = [u for e in lookups for a in e.get("attempts") or () for u in a.get("upstream") or ()]
        cause = _hop_cause(w, cache, upstream)
        container = _container_of(lookups)
        app = proc_label(pid, comm, container)
        hop = f"the local cache {program} (pid {cache_pid}, {cache.get('comm')}) on {server}"
        latencies = [int(e["latency_ns"]) for e in bad if e.get("latency_ns")]
        errors = Counter(e.get("error") for e in bad if e.get("error") not in (None, "", "NOERROR"))
        outcome = ", ".join(f"{err} x{n}" for err, n in errors.most_common(3))
        if latencies:
            outcome += ("; " if outcome else "") + f"median {_dur(statistics.median(latencies))}"
        head = f"{len(bad)} of {len(lookups)} lookups by {app} through {hop} failed or were slow ({outcome})"
        evidence = {"app_pid": pid, "app_comm": comm, "cache": cache, "lookups": len(lookups),
                    "slow_or_failed": len(bad), "median_ns": statistics.median(latencies) if latencies else None,
                    "upstream_attempts": len(upstream),
                    "errors": dict(errors)}
        keep = f" Keep 'nameserver {server}': the cache itself is not the fault."
        if cause:
            why, fix, more = cause
            evidence.update(more)
            summary = f"{head}: {why}"
            severity = "critical" if len(bad) >= 0.5 * len(lookups) else "warning"
            confidence = "measured"
        else:
            summary = (f"{head}; nothing failing was seen on the cache's upstream side (its upstream may use "
                       f"ports or paths not traced)")
            fix = (f"Look at {program}'s upstream and logs ({CACHE_UPSTREAM_CONFIG.get(program, 'its config')}): "
                   f"the app waits on it.")
            severity = "warning"
            confidence = "wire"
        fix += keep
        findings.append(Finding("local-cache-upstream", severity, summary, evidence, fix,
                                key=f"{pid}/{cache_pid}/{server}", pids=[pid, cache_pid],
                                comms=[comm, cache.get("comm")], containers=[container] if container else [],
                                confidence=confidence))
    return findings


def rule_resolver_bypasses_libc(w: Window, min_queries: int = 3) -> list[Finding]:
    if not w.gai_traced:
        return []
    gai_pids = {e.get("pid") for e in w.kind("gai")}
    findings = []
    for (pid, comm), queries in w.by_process("dns").items():
        if pid in gai_pids or _is_dns_server_comm(comm) or len(queries) < min_queries:
            continue
        if any(q.get("sport") in DNS_PORTS for q in queries):
            continue  # a server's own traffic
        container = _container_of(queries)
        summary = (f"{proc_label(pid, comm, container)} sent {len(queries)} DNS queries without calling "
                   f"getaddrinfo: it has its own resolver (Go, c-ares, Java...), which may ignore resolv.conf "
                   f"options such as single-request-reopen")
        evidence = {"queries": len(queries), "servers": sorted({str(q.get("server")) for q in queries})[:8],
                    "qnames": [n for n, _ in Counter(q.get("qname") for q in queries).most_common(5)]}
        fix = ("Check the resolver the program uses: gRPC c-ares -> GRPC_DNS_RESOLVER=native; Go -> "
               "GODEBUG=netdns=cgo to use libc; or configure its own timeouts and nameservers.")
        findings.append(Finding.of_process("resolver-bypasses-libc", "info", summary, evidence, fix,
                                           pid, comm, container))
    return findings


RULES: tuple[Callable[[Window], list[Finding]], ...] = (
    rule_dead_nameserver,
    rule_slow_nameserver,
    rule_timeout_multiple_latency,
    rule_truncated_not_cached,
    rule_tcp_fallback,
    rule_syn_retransmits,
    rule_rp_filter,
    rule_conntrack,
    rule_aaaa_same_port_race,
    rule_ndots_nxdomain_storm,
    rule_cache_miss_storm,
    rule_resolver_bypasses_libc,
    rule_local_cache_upstream,
)
RULE_IDS = ("dead-nameserver", "slow-nameserver", "timeout-multiple-latency", "truncated-not-cached",
            "tcp-fallback", "syn-retransmits", "rp-filter-no-address", "rp-filter-drops",
            "conntrack-insert-failed", "conntrack-table-full", "aaaa-same-port-race", "ndots-nxdomain-storm",
            "cache-miss-storm", "resolver-bypasses-libc", "local-cache-upstream")


def evaluate(events: Iterable[dict], now_ns: int | None = None, window_ns: int = WINDOW_NS,
             gai_traced: bool | None = None) -> list[Finding]:
    """Run every rule over a recorded stream (the last ``window_ns`` before ``now_ns``)."""
    events = list(events)
    if now_ns is None:
        now_ns = max((e.get("ts") or 0 for e in events), default=0)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if not e.get("ts") or e["ts"] > now_ns - window_ns:
            by_kind[e.get("kind")].append(e)
    return run_rules(Window(by_kind, now_ns, window_ns, gai_traced))


def run_rules(window: Window) -> list[Finding]:
    findings = []
    for rule in RULES:
        findings.extend(rule(window))
    findings.sort(key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), f.rule, f.key))
    return findings


class FindingsEngine(Stage):
    """Keeps the last minute of events (bounded per kind) and evaluates the rules every tick."""

    name = "findings"
    KINDS = ("gai", "dns", "lookup", "syn_retry", "connect", "drop", "conntrack", "agent")

    def __init__(self, window_ns: int = WINDOW_NS, max_events_per_kind: int = MAX_EVENTS_PER_KIND,
                 host: str = "", gai_traced: bool | None = None,
                 on_finding: Callable[[dict], None] | None = None):
        self.window_ns = window_ns
        self.host = host
        self.gai_traced = gai_traced
        self.on_finding = on_finding
        self.events: dict[str, FairBuffer] = {k: FairBuffer(max_events_per_kind) for k in self.KINDS}
        self.active: list[Finding] = []
        self.first_seen: dict[tuple, int] = {}
        self._emitted_at: dict[tuple, int] = {}
        self._emitted_pids: dict[tuple, tuple] = {}
        self.pending: list[dict] = []  # finding events not yet taken by ``take_new()``
        self.now_ns = 0
        self.counters = {"events": 0, "evicted_over_bound": 0, "evaluations": 0, "evaluations_deferred": 0,
                         "findings_emitted": 0, "pending_dropped": 0, "listener_errors": 0}
        self.listeners: list[Callable[[list[dict]], None]] = []  # get the active findings after each evaluation
        self._last_cost_s = 0.0
        self._last_eval_monotonic = -1e9

    def handle(self, events: list[dict]) -> None:
        buffers = self.events
        unused = UNUSED_FIELDS
        for e in events:
            buffer = buffers.get(e.get("kind"))
            if buffer is None:
                continue
            if unused.isdisjoint(e):
                buffer.append(e)
            else:  # keep a slim copy: the answers, partner and fallback records are not read by any rule
                slim = e.copy()
                for name in unused.intersection(e):
                    del slim[name]
                buffer.append(slim)
            self.counters["events"] += 1
            ts = e.get("ts") or 0
            if ts > self.now_ns:
                self.now_ns = ts

    def bind(self, sinks) -> None:
        """Sinks that show the active set (``set_findings``: metrics) listen to every evaluation."""
        for sink in sinks:
            if callable(getattr(sink, "set_findings", None)):
                self.listeners.append(sink.set_findings)

    def tick(self, now_ns: int) -> list[dict]:
        """Evaluate (when due); return the finding events not yet handed out."""
        self._tick_evaluate(now_ns)
        return self.take_new()

    def flush(self) -> list[dict]:
        return self.take_new()

    def _tick_evaluate(self, now_ns: int) -> None:
        # Evaluation cost grows with the window's events: keep it under ~10 % of one core by
        # evaluating less often when it is expensive (every 1 s when cheap, at most every 10 s).
        interval_s = min(10.0, max(1.0, self._last_cost_s * 10))
        if time.monotonic() - self._last_eval_monotonic < interval_s - 0.05:
            self.counters["evaluations_deferred"] += 1
            return
        started = time.process_time()
        self.evaluate(now_ns)
        self._last_cost_s = time.process_time() - started
        self._last_eval_monotonic = time.monotonic()

    def evaluate(self, now_ns: int | None = None) -> list[Finding]:
        now_ns = max(now_ns or 0, self.now_ns)
        horizon = now_ns - self.window_ns
        by_kind = {}
        by_pid = {}
        for kind, buffer in self.events.items():
            buffer.expire(horizon)
            by_kind[kind] = buffer.events()
            by_pid[kind] = buffer.by_pid
        self.active = run_rules(Window(by_kind, now_ns, self.window_ns, self.gai_traced, by_pid=by_pid))
        self.counters["evaluations"] += 1
        for finding in self.active:
            ident = (finding.rule, finding.key)
            self.first_seen.setdefault(ident, now_ns)
            since = now_ns - self._emitted_at.get(ident, -REEMIT_NS)
            # again after a minute, or sooner (5 s) when the processes it names changed
            changed = self._emitted_pids.get(ident) != tuple(finding.pids) and since >= REEMIT_CHANGED_NS
            if since >= REEMIT_NS or changed:
                self._emitted_at[ident] = now_ns
                self._emitted_pids[ident] = tuple(finding.pids)
                event = finding.event(now_ns, self.host)
                event["first_seen"] = self.first_seen[ident]
                self.counters["findings_emitted"] += 1
                if len(self.pending) < 1000:
                    self.pending.append(event)
                else:
                    self.counters["pending_dropped"] += 1
                if self.on_finding:
                    self.on_finding(event)
        if len(self.first_seen) > 10_000:  # bound: forget identities no longer active
            live = {(f.rule, f.key) for f in self.active}
            self.first_seen = {k: v for k, v in self.first_seen.items() if k in live}
            self._emitted_at = {k: v for k, v in self._emitted_at.items() if k in live}
            self._emitted_pids = {k: v for k, v in self._emitted_pids.items() if k in live}
        if self.listeners:
            current = self.current()
            for listener in self.listeners:
                try:
                    listener(current)
                except Exception:  # a broken listener must not stop the findings
                    self.counters["listener_errors"] += 1
        return self.active

    def take_new(self) -> list[dict]:
        pending, self.pending = self.pending, []
        return pending

    def current(self) -> list[dict]:
        return [f.event(self.now_ns, self.host) for f in self.active]

    def stats(self) -> dict:
        return {**self.counters, "evicted_over_bound": sum(b.evicted for b in self.events.values()),
                "buffered": sum(len(b) for b in self.events.values()),
                "buffered_processes": sum(len(b.by_pid) for b in self.events.values()), "active": len(self.active)}
