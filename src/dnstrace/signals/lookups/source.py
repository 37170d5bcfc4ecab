"""Each name lookup broken into its wire attempts: ``dnstrace trace lookups``.

``LookupsSource`` runs the getaddrinfo source (``dnstrace.signals.gai.source``) and the
wire source (``dnstrace.signals.dns.source``) together and passes their events on
(``gai`` and ``dns``), plus one ``lookup`` event per name lookup, built by
``LookupJoiner``:

* source="gai": a libc call (pid, tid, start, end, name) gets every wire query of
  the same pid sent during the call whose name is the asked name or one of its
  search-list expansions: A/AAAA pairs, each nameserver tried, timeouts, TCP
  retries after truncation, in send order. Queries still unanswered when the
  call returned are attempts with ``answered=false``. The lookup is emitted a
  short grace period after the call returned (the two sources have separate
  ring buffers).
* source="wire": queries no libc call claimed (Go, c-ares, dig, Java...) are
  grouped per process and first label of the name, and emitted once the process
  has nothing in flight and nothing new came for ``hold_ns``. Grouping and latency
  follow the process's resolver model (``resolver_models``): a query joins the
  lookup while it follows the previous attempts' end (answer or timeout) by less
  than ``gap_ns`` and does not repeat a question already answered; a parallel
  resolver (musl) is done at its first answers.

Every lookup names its resolver model (``resolver``, ``resolver_from``). When an
attempt went to a nameserver served by a process on this node (a node-local cache,
``chains``), the lookup carries ``via`` (that process) and the attempt carries
``upstream``: the cache's own queries for the same question while the app waited.

The joiner is pure (events and the in-flight list in, lookups out) so it is
tested on recorded streams. Its buffers are bounded; evictions are counted.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from dnstrace import log
from dnstrace.bounded import BoundedDict
from dnstrace.enrich.chains import LocalServerFinder, UpstreamIndex
from dnstrace.enrich.resolvconf import ResolvConf
from dnstrace.enrich.resolver_models import ModelRegistry, lookup_latency, split_lookups, waited_for
from dnstrace.errors import DnstraceError
from dnstrace.flow import Source
from dnstrace.kernel.clock import KernelClock, shared_clock
from dnstrace.log import status
from dnstrace.signals.base import Event
from dnstrace.signals.dns.source import DnsWireSource

GAI_GRACE_NS = 200_000_000  # wait this long after a libc call returned for its wire events
WINDOW_SLACK_NS = 2_000_000  # the two sources poll apart: a clock refresh may fall between them
WIRE_HOLD_NS = 1_500_000_000  # an unclaimed query joins a wire-only lookup after this
WIRE_GAP_NS = 1_000_000_000  # queries further apart than this are separate wire lookups
WIRE_MAX_HOLD_NS = 30_000_000_000  # a process resolving without pause still gets its lookups out
MAX_WIRE_PER_PID = 4096  # bounds the scan a libc call's join makes

AttemptKey = tuple[Any, ...]  # (pid, ts, id, sport, qtype): one query on the wire
ATTEMPT_FIELDS = ("ts", "qname", "qtype", "server", "dport", "proto", "sport", "id", "latency_ns", "rcode",
                  "answered", "tc", "ancount", "answers", "ns_index", "same_port_pair", "tcp_fallback",
                  "retransmit", "timeout_ns")


def _attempt_key(event: Event) -> AttemptKey:
    return (event.get("pid"), event.get("ts"), event.get("id"), event.get("sport"), event.get("qtype"))


def _label(event: Event) -> str:
    """First label of the query name: what search-list expansions of one name share."""
    return (event.get("qname") or "").lower().split(".", 1)[0]


def _attempt(event: Event) -> Event:
    attempt = {field: event.get(field) for field in ATTEMPT_FIELDS}
    if event.get("timeout_ns"):
        attempt["timeout_ns"] = event["timeout_ns"]
    return attempt


def name_matches(qname: str | None, name: str | None) -> bool:
    """``qname`` is ``name`` or a search-list expansion of it (case-insensitive)."""
    if not qname or not name:
        return False
    qname = qname.lower().rstrip(".")
    name = name.lower().rstrip(".")
    return qname == name or qname.startswith(name + ".")


def _summary(lookup: Event, attempts: list[Event]) -> Event:
    lookup["attempts"] = attempts
    lookup["timeouts"] = sum(1 for a in attempts if a["answered"] is False)
    lookup["same_port_pair"] = any(a["same_port_pair"] for a in attempts)
    lookup["tcp_fallback"] = any(a["tcp_fallback"] for a in attempts)
    lookup["servers"] = list(dict.fromkeys(a["server"] for a in attempts))
    return lookup


class LookupJoiner:
    """gai + dns events in, ``lookup`` events out (see the module docstring)."""

    def __init__(self, resolv_for_pid: Callable[[int], ResolvConf | None] | None = None,
                 max_wire_events: int = 65536, max_gai_pending: int = 16384,
                 grace_ns: int = GAI_GRACE_NS, hold_ns: int = WIRE_HOLD_NS, gap_ns: int = WIRE_GAP_NS,
                 models: ModelRegistry | None = None, local_servers: LocalServerFinder | None = None):
        self.resolv_for_pid = resolv_for_pid or (lambda pid: None)
        self.models = models or ModelRegistry(read_binary=lambda pid, cache: None)
        self.local_servers = local_servers  # None: lookups are not joined to node-local caches
        self.upstream = UpstreamIndex()
        # (pid, server, comm) already looked at (model, local server)
        self._first_seen: set[tuple[int, str | None, str | None]] = set()
        self.grace_ns, self.hold_ns, self.gap_ns = grace_ns, hold_ns, gap_ns
        self.max_wire_events = max_wire_events
        self.max_gai_pending = max_gai_pending
        self.wire: dict[int, list[tuple[int, Event]]] = defaultdict(list)  # pid -> [(arrival, dns event)]
        self.wire_count = 0
        self.gai_pending: deque[tuple[int, Event]] = deque()  # (when to join it, gai event), in arrival order
        self.claimed: BoundedDict = BoundedDict(65536)  # attempts already in a lookup -> None
        self.counters = dict(lookups_gai=0, lookups_wire=0, wire_evicted=0, gai_evicted=0)

    def add(self, event: Event, now_ns: int) -> None:
        kind = event.get("kind")
        if kind == "gai":
            self.models.saw_libc_call(event["pid"], event.get("libc"))
            self.gai_pending.append((self._gai_end(event) + self.grace_ns, event))
            if len(self.gai_pending) > self.max_gai_pending:
                self.gai_pending.popleft()
                self.counters["gai_evicted"] += 1
        elif kind == "dns" and event.get("pid"):
            self.upstream.add(event)
            first_seen = (event["pid"], event.get("server"), event.get("comm"))
            if first_seen not in self._first_seen:  # while the process lives: its binary, its netns's servers
                if len(self._first_seen) >= 65536:
                    self._first_seen.clear()
                self._first_seen.add(first_seen)
                self.models.observe(event["pid"], event.get("comm"))
                if self.local_servers is not None:
                    self.local_servers.find(event["pid"], event["server"], event.get("dport") or 53)
            if _attempt_key(event) in self.claimed:
                return  # e.g. the timeout of an attempt a lookup already reported as unanswered
            stored = self.wire[event["pid"]]
            stored.append((now_ns, event))
            self.wire_count += 1
            if len(stored) > MAX_WIRE_PER_PID:
                stored.pop(0)
                self.wire_count -= 1
                self.counters["wire_evicted"] += 1
            elif self.wire_count > self.max_wire_events:
                self._evict_oldest_wire()

    def _evict_oldest_wire(self) -> None:
        pid = min(self.wire, key=lambda p: self.wire[p][0][0])
        self.wire[pid].pop(0)
        if not self.wire[pid]:
            del self.wire[pid]
        self.wire_count -= 1
        self.counters["wire_evicted"] += 1

    def shift(self, step_ns: int) -> None:
        """The wall clock was stepped by ``step_ns``: move what waits for a time to the new scale.

        Without this, a backward step would hold every buffered call and query for as long as the
        step, and a forward one would join them before their wire events came."""
        self.gai_pending = deque((due + step_ns, event) for due, event in self.gai_pending)
        for pid, stored in self.wire.items():
            self.wire[pid] = [(arrival + step_ns, event) for arrival, event in stored]

    def _claim(self, event: Event) -> None:
        self.claimed.put(_attempt_key(event), None)

    def flush(self, now_ns: int, inflight: list[Event] | None = None) -> list[Event]:
        """Lookups that are complete at ``now_ns``. ``inflight``: queries sent and not yet answered."""
        inflight = [] if inflight is None else inflight
        lookups = []
        while self.gai_pending and self.gai_pending[0][0] <= now_ns:
            lookups.append(self._join_gai(self.gai_pending.popleft()[1], inflight))
        lookups.extend(self._wire_lookups(now_ns, inflight))
        return lookups

    @staticmethod
    def _gai_end(event: Event) -> int:
        end: int = event["ts"] + (event.get("latency_ns") or 0)
        return end

    def _join_gai(self, gai: Event, inflight: list[Event]) -> Event:
        pid, name = gai["pid"], gai.get("name")
        start, end = gai["ts"] - WINDOW_SLACK_NS, self._gai_end(gai) + WINDOW_SLACK_NS
        attempts = []
        stored = self.wire.get(pid, [])
        keep = []
        for arrival, event in stored:
            if start <= event["ts"] <= end and name_matches(event.get("qname"), name):
                attempts.append(event)
                self._claim(event)
            else:
                keep.append((arrival, event))
        if stored:
            self.wire_count -= len(stored) - len(keep)
            if keep:
                self.wire[pid] = keep
            else:
                del self.wire[pid]
        for event in inflight:
            if (event.get("pid") == pid and start <= event["ts"] <= end
                    and name_matches(event.get("qname"), name) and _attempt_key(event) not in self.claimed):
                attempts.append(event)
                self._claim(event)
        attempts.sort(key=lambda e: e["ts"])
        self.counters["lookups_gai"] += 1
        conf = self.resolv_for_pid(pid) if pid else None
        model, known_from = self.models.model_of(pid, gai.get("comm"), attempts)
        lookup = {
            "kind": "lookup", "ts": gai["ts"], "pid": pid, "tid": gai.get("tid"), "comm": gai.get("comm"),
            "name": name, "latency_ns": gai.get("latency_ns"), "error": gai.get("error"), "source": "gai",
            "func": gai.get("func"), "resolv_conf": conf.as_dict() if conf else None,
            "resolver": model.name, "resolver_from": known_from,
            # measured: a call shorter than one resolver timeout did not sit through one
            "waited_timeouts": waited_for(attempts, model) and not (
                conf and (gai.get("latency_ns") or 0) < 0.8 * conf.timeout_s * 1e9),
        }
        return self._via(_summary(lookup, [_attempt(e) for e in attempts]), inflight)

    def _via(self, lookup: Event, inflight: list[Event]) -> Event:
        """Attempts to a nameserver served on this node: the serving process and its upstream queries."""
        lookup["via"] = None
        if self.local_servers is None:
            return lookup
        for attempt in lookup["attempts"]:
            local = self.local_servers.find(lookup["pid"], attempt.get("server"), attempt.get("dport") or 53)
            if local is None or local.pid == lookup["pid"]:
                continue
            if lookup["via"] is None:
                lookup["via"] = local.as_dict()
            attempt["upstream"] = [_attempt(e) for e in self.upstream.upstream_of(attempt, local, inflight)]
        return lookup

    def _wire_lookups(self, now_ns: int, inflight: list[Event]) -> list[Event]:
        busy = {(e.get("pid"), _label(e)) for e in inflight}
        lookups = []
        for pid in list(self.wire):
            stored = self.wire[pid]
            if now_ns - stored[-1][0] < self.hold_ns and now_ns - stored[0][0] < WIRE_MAX_HOLD_NS:
                continue  # a libc call may still claim these
            groups: dict[str, list[tuple[int, Event]]] = defaultdict(list)
            for item in stored:
                groups[_label(item[1])].append(item)
            keep = []
            for label, items in groups.items():
                last_arrival = max(arrival for arrival, _ in items)
                waiting = (pid, label) in busy or now_ns - last_arrival < self.hold_ns
                if waiting and now_ns - items[0][0] < WIRE_MAX_HOLD_NS:
                    keep.extend(items)  # still resolving this name
                    continue
                for run in split_lookups([e for _, e in items], self.gap_ns):
                    lookups.append(self._wire_lookup(pid, run, inflight))
            self.wire_count -= len(stored) - len(keep)
            if keep:
                keep.sort(key=lambda item: item[0])
                self.wire[pid] = keep
            else:
                del self.wire[pid]
        lookups.sort(key=lambda lookup: lookup["ts"])
        return lookups

    def _wire_lookup(self, pid: int, events: list[Event], inflight: list[Event]) -> Event:
        first = events[0]
        name = min((e.get("qname") or "" for e in events), key=len)
        model, known_from = self.models.model_of(pid, first.get("comm"), events)
        found = [e for e in events if e.get("answered") and e.get("rcode") == "NOERROR" and e.get("ancount")]
        answered = [e for e in events if e.get("answered")]
        if found:
            error = None
        elif answered:
            error = answered[-1].get("rcode")
        else:
            error = "TIMEOUT"
        self.counters["lookups_wire"] += 1
        conf = self.resolv_for_pid(pid)
        lookup = {
            "kind": "lookup", "ts": first["ts"], "pid": pid, "tid": first.get("tid"), "comm": first.get("comm"),
            "name": name, "latency_ns": lookup_latency(events), "error": error, "source": "wire",
            "func": None, "resolv_conf": conf.as_dict() if conf else None,
            "resolver": model.name, "resolver_from": known_from, "waited_timeouts": waited_for(events, model),
        }
        return self._via(_summary(lookup, [_attempt(e) for e in events]), inflight)

    def stats(self) -> dict[str, object]:
        stats: dict[str, object] = dict(self.counters, wire_buffered=self.wire_count, gai_buffered=len(self.gai_pending))
        if self.local_servers is not None:
            stats.update(self.local_servers.counters)
        return stats


class LookupsSource(Source):
    """gai + dns sources, their events, and the lookups joined from them."""

    name = "lookups"

    def __init__(self, dns_source: DnsWireSource, gai_sources: list[Source], clock: KernelClock | None = None):
        self.dns = dns_source
        self.clock = clock or shared_clock()  # the one its inner sources convert with (the shared one)
        self._offset_seen = self.clock.offset_ns
        self.gai_sources = gai_sources
        self.active_gai: list[Source] = []
        self.joiner = LookupJoiner(resolv_for_pid=dns_source.tracker.resolv_conf_of, models=ModelRegistry(),
                                   local_servers=LocalServerFinder())
        self.gai_problem: str | None = None
        self.log = log.get("lookups")

    def start(self) -> None:
        self.dns.start()
        for source in self.gai_sources:
            try:
                source.start()
                self.active_gai.append(source)
            except DnstraceError as err:  # wire-only lookups still work
                self.gai_problem = err.message
                source.close()
                status(f"dnstrace: lookups: getaddrinfo probes unavailable ({err.message}); wire lookups only")

    def fds(self) -> list[int]:
        return self.dns.fds() + [fd for source in self.active_gai for fd in source.fds()]

    def _feed(self, events: list[Event], now_ns: int) -> list[Event]:
        offset = self.clock.offset_ns  # the inner sources' polls refreshed it
        if offset != self._offset_seen:
            self.joiner.shift(offset - self._offset_seen)
            self._offset_seen = offset
        for event in events:
            self.joiner.add(event, now_ns)
        return events + self.joiner.flush(now_ns, self.dns.pending())

    def poll(self) -> list[Event]:
        events = self.dns.poll()
        for source in self.active_gai:
            events.extend(source.poll())
        return self._feed(events, self.clock.now_unix_ns())

    def tick(self, now_ns: int) -> list[Event]:
        events = self.dns.tick(now_ns)
        for source in self.active_gai:
            events.extend(source.tick(now_ns))
        return self._feed(events, now_ns)

    def flush(self) -> list[Event]:
        """Shutdown: what the inner sources still hold, then every lookup still waiting for late wire events."""
        events = self.dns.flush()
        for source in self.active_gai:
            events.extend(source.flush())
        events = self._feed(events, self.clock.now_unix_ns())
        far_future_ns = self.clock.now_unix_ns() + 3600 * 10**9
        return events + self.joiner.flush(far_future_ns, self.dns.pending())

    def stats(self) -> Event:
        stats = {f"dns_{k}": v for k, v in self.dns.stats().items()}
        for source in self.active_gai:
            stats.update({f"gai_{k}": v for k, v in source.stats().items()})
        stats.update(self.joiner.stats())
        if self.gai_problem:
            stats["gai_unavailable"] = self.gai_problem
        return stats

    def close(self) -> None:
        for source in self.active_gai:
            source.close()
        self.active_gai = []
        self.dns.close()
