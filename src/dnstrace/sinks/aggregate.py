"""Aggregation: sliding windows per process, per container, per nameserver and for the whole node.

Every event lands in a one-second *slot* of the series it belongs to; a series
keeps the last 60 slots, so a view over the last 10 s or 1 min is the merge of
its slots. A slot holds a latency histogram on the one grid of ``dnstrace.latency``
(8 buckets per octave, about 9 % wide; p50/p90/p99 read as the bucket's upper edge
clamped to the exact max, the same figures ``dnstrace query`` gives), and counters:
lookups, failures by error (``events.is_failed``), rcodes, unanswered queries per
nameserver, TC answers, TCP fallbacks, SYN retries per destination, drops by reason,
conntrack deltas.

Memory is bounded whatever arrives: each table keeps at most ``max_keys`` series
(when full, the least active tenth is folded into an ``other`` series and counted
as evictions) and each per-slot breakdown (servers, destinations, reasons, errors)
keeps at most ``MAX_BREAKDOWN`` keys plus ``other``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from dnstrace.events import CONNTRACK_COUNTERS, is_failed
from dnstrace.flow import Sink
from dnstrace.latency import Histogram

WINDOW_SLOTS = 60  # seconds kept per series
VIEWS_S = {"1s": 1, "10s": 10, "1m": 60}
MAX_BREAKDOWN = 16
OTHER = "other"
SLOW_KEPT = 5  # slowest recent lookups remembered per process (for the detail view)

# Most slots never see most breakdowns: they all share this empty dict until their first
# count (``_bump`` gives the slot its own). Never written to.
_EMPTY: dict = {}


def _bump(slot: Slot, name: str, key, n: int = 1) -> None:
    """slot.<name>[key] += n, with at most MAX_BREAKDOWN keys plus OTHER."""
    counts = getattr(slot, name)
    if counts is _EMPTY:
        counts = {}
        setattr(slot, name, counts)
    if key in counts or len(counts) < MAX_BREAKDOWN:
        counts[key] = counts.get(key, 0) + n
    else:
        counts[OTHER] = counts.get(OTHER, 0) + n


BREAKDOWNS = ("failures", "rcodes", "unanswered", "answered", "tc", "syn_retries", "drops", "conntrack")


class Slot:
    """Everything counted for one series in one second (or merged over a view)."""

    __slots__ = ("latency", "lookups", "failures", "queries", "rcodes", "unanswered", "answered",
                 "tc", "tcp_fallback", "same_port", "syn_retries", "connects", "drops", "conntrack")

    def __init__(self):
        self.latency = Histogram()  # lookups (or gai calls), or answer latency for server series
        self.lookups = 0
        self.failures: dict[str, int] = _EMPTY  # error -> lookups (every dict: _EMPTY until counted)
        self.queries = 0
        self.rcodes: dict[str, int] = _EMPTY
        self.unanswered: dict[str, int] = _EMPTY  # server -> queries never answered
        self.answered: dict[str, int] = _EMPTY  # server -> queries answered
        self.tc: dict[str, int] = _EMPTY  # server -> truncated answers
        self.tcp_fallback = 0
        self.same_port = 0
        self.syn_retries: dict[str, int] = _EMPTY  # "addr:port" -> retransmitted SYNs
        self.connects = 0
        self.drops: dict[str, int] = _EMPTY  # reason -> packets
        self.conntrack: dict[str, int] = _EMPTY  # counter -> delta

    def merge(self, other: Slot) -> None:
        self.latency.merge(other.latency)
        self.lookups += other.lookups
        self.queries += other.queries
        self.tcp_fallback += other.tcp_fallback
        self.same_port += other.same_port
        self.connects += other.connects
        for name in BREAKDOWNS:
            counts = getattr(other, name)
            if counts:  # most are empty: skip them without a call
                for key, n in counts.items():
                    _bump(self, name, key, n)


class Series:
    """The last WINDOW_SLOTS one-second slots of one key, plus a few 'latest' facts."""

    __slots__ = ("key", "slots", "info", "slowest", "last_s", "activity")

    def __init__(self, key, info: dict | None = None):
        self.key = key
        self.slots: deque[tuple[int, Slot]] = deque()
        self.info = dict(info or {})  # pid, comm, container, pod, namespace, nameservers...
        self.slowest: list[dict] = []  # slowest recent lookups, each with its attempts
        self.last_s = 0
        self.activity = 0  # events in the kept slots, for eviction order

    def slot(self, second: int) -> Slot:
        if self.slots and self.slots[-1][0] == second:
            return self.slots[-1][1]
        if self.slots and second < self.slots[-1][0]:  # late event: find or insert its slot
            for sec, slot in self.slots:
                if sec == second:
                    return slot
            return self.slots[-1][1]  # older than anything kept: count it in the newest
        slot = Slot()
        self.slots.append((second, slot))
        while len(self.slots) > WINDOW_SLOTS:
            self.slots.popleft()
        self.last_s = second
        return slot

    def view(self, now_s: int, window_s: int) -> Slot:
        merged = Slot()
        for second, slot in self.slots:
            if second > now_s - window_s:
                merged.merge(slot)
        return merged

    def expire(self, now_s: int) -> None:
        while self.slots and self.slots[0][0] <= now_s - WINDOW_SLOTS:
            self.slots.popleft()
        self.slowest = [s for s in self.slowest if s["second"] > now_s - WINDOW_SLOTS]

    def absorb(self, other: Series) -> None:
        """Fold another series (being evicted) into this one."""
        mine = {sec: slot for sec, slot in self.slots}
        for second, slot in other.slots:
            if second in mine:
                mine[second].merge(slot)
            else:
                mine[second] = slot
        self.slots = deque(sorted(mine.items())[-WINDOW_SLOTS:])
        self.activity += other.activity


class Table:
    """Series by key, at most ``max_keys`` of them plus an ``other`` series."""

    def __init__(self, name: str, max_keys: int):
        self.name = name
        self.max_keys = max_keys
        self.series: dict = {}
        self.other = Series(OTHER, {"comm": OTHER, "container": OTHER})
        self.evictions = 0

    def get(self, key, info: dict | None = None) -> Series:
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= self.max_keys:
                self._evict()
            series = self.series[key] = Series(key, info)
        elif info:
            for name, value in info.items():
                if value not in (None, "", []) or name not in series.info:
                    series.info[name] = value
        return series

    def _evict(self) -> None:
        # The least active tenth goes into "other" in one pass (amortised: no scan per new key).
        victims = sorted(self.series.values(), key=lambda s: (s.activity, s.last_s))
        for series in victims[: max(1, self.max_keys // 10)]:
            self.other.absorb(series)
            del self.series[series.key]
            self.evictions += 1

    def expire(self, now_s: int) -> None:
        dead = []
        for key, series in self.series.items():
            series.expire(now_s)
            if not series.slots:
                dead.append(key)
        for key in dead:
            del self.series[key]
        self.other.expire(now_s)

    def all(self) -> Iterable[Series]:
        yield from self.series.values()
        if self.other.slots:
            yield self.other


def row_from(series: Series, slot: Slot, window_s: int) -> dict:
    """One display / export row: the figures ``top`` and ``--once --json`` show."""
    p50, p90, p99 = slot.latency.quantiles((0.50, 0.90, 0.99))
    return {
        **{k: series.info.get(k) for k in ("pid", "comm", "container", "pod", "namespace")},
        "lookups": slot.lookups,
        "lookups_per_s": round(slot.lookups / window_s, 2),
        "p50_ns": p50, "p90_ns": p90, "p99_ns": p99,
        "max_ns": slot.latency.max or None,
        "failures": sum(slot.failures.values()),
        "failures_by_error": dict(slot.failures),
        "queries": slot.queries,
        "rcodes": dict(slot.rcodes),
        "unanswered": sum(slot.unanswered.values()),
        "unanswered_by_server": dict(slot.unanswered),
        "tc": sum(slot.tc.values()),
        "tcp_fallback": slot.tcp_fallback,
        "same_port": slot.same_port,
        "syn_retries": sum(slot.syn_retries.values()),
        "syn_retries_by_dest": dict(slot.syn_retries),
        "drops": sum(slot.drops.values()),
        "drops_by_reason": dict(slot.drops),
    }


class Aggregator(Sink):
    """Windows per process / container / nameserver / node. A Sink: feed it enriched events."""

    name = "aggregate"

    def __init__(self, max_processes: int = 4096, max_containers: int = 1024, max_servers: int = 256):
        self.processes = Table("process", max_processes)
        self.containers = Table("container", max_containers)
        self.servers = Table("server", max_servers)
        self.node = Series("node", {"comm": "(node)"})
        self.now_s = 0
        self.lookup_kind: str | None = None  # "lookup" once lookup events arrive, else "gai"
        self.conntrack_latest: dict[str, dict] = {}  # netns -> {"count":.., "max":..}
        self.counters = {"events": 0, "ignored": 0}
        # The agent's own losses (``agent`` events): totals per source, and (second, lost, dns_lost)
        # of the last minute for the status line.
        self.agent_lost_total: dict[str, int] = {}
        self.agent_recent: deque = deque(maxlen=4096)

    # --- feeding --------------------------------------------------------------------

    def handle(self, events: list[dict]) -> None:
        for event in events:
            self.add(event)

    def tick(self, now_ns: int) -> None:
        self.now_s = max(self.now_s, now_ns // 1_000_000_000)
        for table in (self.processes, self.containers, self.servers):
            table.expire(self.now_s)
        self.node.expire(self.now_s)

    def add(self, event: dict) -> None:
        kind = event.get("kind")
        ts = event.get("ts")
        second = int(ts // 1_000_000_000) if ts else self.now_s
        if second > self.now_s:
            self.now_s = second
        self.counters["events"] += 1
        if kind == "lookup" and self.lookup_kind != "lookup":
            self.lookup_kind = "lookup"
        if kind == "conntrack":
            self._add_conntrack(event, second)
            return
        if kind == "agent":
            lost = int(event.get("lost") or 0)
            source = str(event.get("source") or "?")
            if source in self.agent_lost_total or len(self.agent_lost_total) < 64:
                self.agent_lost_total[source] = self.agent_lost_total.get(source, 0) + lost
            self.agent_recent.append((second, lost, int(event.get("dns_lost") or 0)))
            return
        if kind not in ("gai", "lookup", "dns", "syn_retry", "connect", "drop"):
            self.counters["ignored"] += 1
            return
        slots = [self.node.slot(second)]
        pid = event.get("pid")
        if pid:
            info = {k: event.get(k) for k in ("pid", "comm", "container", "pod", "namespace")}
            if kind in ("gai", "dns", "lookup") and event.get("nameservers"):
                info.update(nameservers=event["nameservers"], search=event.get("search", []),
                            resolv_options=event.get("resolv_options", []))
            series = self.processes.get((pid, event.get("comm")), info)
            series.activity += 1
            slots.append(series.slot(second))
            container = event.get("container") or ""
            if container:
                cseries = self.containers.get(container, {"comm": "", "container": container,
                                                          "pod": event.get("pod"),
                                                          "namespace": event.get("namespace")})
                cseries.activity += 1
                slots.append(cseries.slot(second))
            # lookup events carry the attempts; gai calls only when the lookups signal is not there
            if event.get("latency_ns") and (kind == "lookup" or (kind == "gai" and self.lookup_kind is None)):
                self._remember_slow(series, event, second)
        for slot in slots:
            self._count(slot, kind, event)
        if kind == "dns" and event.get("server"):
            sseries = self.servers.get(event["server"], {"comm": "", "server": event["server"]})
            sseries.activity += 1
            self._count_server(sseries.slot(second), event)

    def _count(self, slot: Slot, kind: str, event: dict) -> None:
        if kind == "lookup" or (kind == "gai" and self.lookup_kind is None):
            slot.lookups += 1
            latency = event.get("latency_ns")
            if latency is not None:
                slot.latency.add(int(latency))
            if is_failed(event):
                _bump(slot, "failures", str(event.get("error")))
        elif kind == "dns":
            if event.get("proto") == "tcp" and event.get("tcp_fallback"):
                slot.tcp_fallback += 1
            if event.get("retransmit"):
                return  # the same id again: counted once as a query
            slot.queries += 1
            server = str(event.get("server"))
            if event.get("answered") is False:
                _bump(slot, "unanswered", server)
            else:
                rcode = event.get("rcode")
                if rcode:
                    _bump(slot, "rcodes", str(rcode))
                if event.get("tc"):
                    _bump(slot, "tc", server)
            if event.get("same_port_pair"):
                slot.same_port += 1
        elif kind == "syn_retry":
            _bump(slot, "syn_retries", f"{event.get('daddr')}:{event.get('dport')}")
        elif kind == "connect":
            slot.connects += 1
        elif kind == "drop":
            _bump(slot, "drops", str(event.get("reason")), int(event.get("count") or 1))

    def _count_server(self, slot: Slot, event: dict) -> None:
        # No retransmit skip here: glibc re-sends the same id to the *next* nameserver, which is that
        # server's first query (skipping it showed a working second nameserver as "no queries seen").
        slot.queries += 1
        server = str(event.get("server"))
        if event.get("answered") is False:
            _bump(slot, "unanswered", server)
            return
        _bump(slot, "answered", server)
        if event.get("latency_ns") is not None:
            slot.latency.add(int(event["latency_ns"]))
        if event.get("rcode"):
            _bump(slot, "rcodes", str(event["rcode"]))
        if event.get("tc"):
            _bump(slot, "tc", server)

    def _add_conntrack(self, event: dict, second: int) -> None:
        slot = self.node.slot(second)
        for name in CONNTRACK_COUNTERS:
            value = event.get(name)
            if value:
                _bump(slot, "conntrack", name, int(value))
        netns = str(event.get("netns", ""))
        if event.get("count") is not None and (netns in self.conntrack_latest or len(self.conntrack_latest) < 64):
            self.conntrack_latest[netns] = {"count": event.get("count"), "max": event.get("max")}

    def _remember_slow(self, series: Series, event: dict, second: int) -> None:
        slowest = series.slowest
        latency = event["latency_ns"]
        if len(slowest) >= SLOW_KEPT and latency <= slowest[-1]["latency_ns"]:
            return
        slowest.append({"second": second, "ts": event.get("ts"), "name": event.get("name"),
                        "latency_ns": latency, "error": event.get("error"), "via": event.get("via"),
                        "attempts": list(event.get("attempts") or [])[:8]})
        slowest.sort(key=lambda s: -s["latency_ns"])
        del slowest[SLOW_KEPT:]

    # --- reading --------------------------------------------------------------------

    def rows(self, by: str = "process", view: str = "10s") -> list[dict]:
        window_s = VIEWS_S[view]
        table = self.processes if by == "process" else self.containers
        rows = []
        for series in table.all():
            slot = series.view(self.now_s, window_s)
            if slot.lookups or slot.queries or slot.syn_retries or slot.drops or slot.connects:
                rows.append(row_from(series, slot, window_s))
        return rows

    def server_rows(self, view: str = "1m") -> list[dict]:
        window_s = VIEWS_S[view]
        rows = []
        for series in self.servers.all():
            slot = series.view(self.now_s, window_s)
            if not slot.queries:
                continue
            rows.append({"server": series.key, "queries": slot.queries,
                         "answered": sum(slot.answered.values()), "unanswered": sum(slot.unanswered.values()),
                         "tc": sum(slot.tc.values()), "rcodes": dict(slot.rcodes),
                         "p50_ns": slot.latency.quantile(0.5), "p99_ns": slot.latency.quantile(0.99),
                         "max_ns": slot.latency.max or None})
        return rows

    def node_view(self, view: str = "1m") -> dict:
        window_s = VIEWS_S[view]
        slot = self.node.view(self.now_s, window_s)
        row = row_from(self.node, slot, window_s)
        row["conntrack"] = dict(slot.conntrack)
        row["conntrack_tables"] = dict(self.conntrack_latest)
        return row

    def agent_losses(self, window_s: int = 60) -> dict:
        """Records the agent itself lost: in the last ``window_s`` (all, DNS) and since start per source."""
        since = self.now_s - window_s
        recent = [(lost, dns) for second, lost, dns in self.agent_recent if second > since]
        return {"window_s": window_s, "lost": sum(lost for lost, _ in recent), "dns_lost": sum(d for _, d in recent),
                "total": sum(self.agent_lost_total.values()), "by_source": dict(self.agent_lost_total)}

    def process_detail(self, pid: int) -> dict | None:
        """What the detail view shows for one process: its resolv.conf, servers, slowest lookups."""
        for (spid, _comm), series in self.processes.series.items():
            if spid == pid:
                slot = series.view(self.now_s, 60)
                servers = {}
                for server in set(slot.unanswered) | set(slot.tc) | set(self._servers_answered(series)):
                    servers[server] = {"unanswered": slot.unanswered.get(server, 0),
                                       "tc": slot.tc.get(server, 0)}
                return {**row_from(series, slot, 60),
                        "nameservers": series.info.get("nameservers", []),
                        "search": series.info.get("search", []),
                        "resolv_options": series.info.get("resolv_options", []),
                        "servers": servers, "slowest": list(series.slowest)}
        return None

    @staticmethod
    def _servers_answered(series: Series) -> list[str]:
        return [str(a.get("server")) for s in series.slowest for a in s["attempts"] if a.get("server")]

    def stats(self) -> dict:
        return {**self.counters,
                "processes": len(self.processes.series), "process_evictions": self.processes.evictions,
                "containers": len(self.containers.series), "container_evictions": self.containers.evictions,
                "servers": len(self.servers.series), "server_evictions": self.servers.evictions}
