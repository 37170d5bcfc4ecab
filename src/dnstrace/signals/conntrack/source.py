"""Conntrack counters of every network namespace on the node, as deltas (``dnstrace trace conntrack``).

Conntrack has no tracepoint. Its per-CPU statistics (``/proc/net/stat/nf_conntrack``:
insert_failed, drop, early_drop, invalid, clash_resolve, search_restart) and the
table's count/max are read inside each namespace (processes' ones and named ones
such as a router namespace with no process, see ``netdev.netns_list``) once per
interval, and reported as ``conntrack`` events carrying the deltas. The packets
conntrack drops show up as ``skb:kfree_skb`` NETFILTER_DROP: ``trace conntrack``
also runs the drops source for that reason, attributed to a flow and, when the drop
happens in the sender's own context, to its process (``attribution``).
"""

from __future__ import annotations

import time
from typing import Any

from dnstrace.errors import UsageError
from dnstrace.events import CONNTRACK_COUNTERS
from dnstrace.flow import Source
from dnstrace.signals.base import Event

# event field <- column of /proc/net/stat/nf_conntrack (named alike but for clash_resolve)
COUNTERS = {field: {"clash_resolve": "clashres"}.get(field, field) for field in CONNTRACK_COUNTERS}
DEFAULT_INTERVAL_NS = 1_000_000_000
MAX_NETNS = 4096  # namespaces tracked at once; beyond that new ones are skipped and counted
WRAP = 1 << 32  # the kernel's per-CPU counters are unsigned int
# One namespace's reading: {"columns": parse_stat's result, "nf_conntrack_count": int | None, "nf_conntrack_max": ...}
Reading = dict[str, Any]


def parse_stat(text: str) -> dict[str, list[int]] | None:
    """``/proc/net/stat/nf_conntrack`` -> {column: [value per CPU]}; None when empty or malformed."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    header = lines[0]
    columns: dict[str, list[int]] = {name: [] for name in header}
    for row in lines[1:]:
        if len(row) != len(header):
            return None
        for name, value in zip(header, row, strict=False):
            try:
                columns[name].append(int(value, 16))
            except ValueError:
                return None
    return columns


def per_cpu_delta(now: list[int], before: list[int] | None) -> int:
    """Sum over CPUs of (now - before) modulo 2^32 (counters wrap); ``before`` None = from zero."""
    if before is None or len(before) != len(now):
        return sum(now)
    return sum((a - b) % WRAP for a, b in zip(now, before, strict=False))


def read_here() -> Reading | None:
    """Conntrack statistics of the calling thread's namespace; None when conntrack is not loaded."""
    try:
        with open("/proc/thread-self/net/stat/nf_conntrack") as f:
            columns = parse_stat(f.read())
    except OSError:
        return None
    if columns is None:
        return None
    result: Reading = {"columns": columns}
    for name in ("nf_conntrack_count", "nf_conntrack_max"):
        try:
            with open(f"/proc/sys/net/netfilter/{name}") as f:
                result[name] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            result[name] = None
    return result


def build_event(netns_label: str, netns_inode: int, now: Reading, before: Reading | None, ts: int) -> Event:
    event: Event = {"kind": "conntrack", "ts": ts, "netns": netns_label, "netns_inode": netns_inode,
             "pid": None, "comm": None}
    before_columns = before["columns"] if before else {}
    for field, column in COUNTERS.items():
        values = now["columns"].get(column)
        event[field] = None if values is None else per_cpu_delta(values, before_columns.get(column))
    entries = now["columns"].get("entries")
    event["count"] = now.get("nf_conntrack_count") if now.get("nf_conntrack_count") is not None else (
        entries[0] if entries else None)
    event["max"] = now.get("nf_conntrack_max")
    return event


def interesting(event: Event, every_interval: bool) -> bool:
    if every_interval:
        return True
    if any(event.get(field) for field in COUNTERS):
        return True
    count, limit = event.get("count"), event.get("max")
    return bool(count and limit and count >= 0.8 * limit)  # table nearly full: say so each interval


class ConntrackSource(Source):
    """No kernel program and no fds: ``tick`` reads the counters of every namespace."""

    name = "conntrack"

    def __init__(self, interval_ns: int = DEFAULT_INTERVAL_NS, every_interval: bool = False):
        if interval_ns < 100_000_000:
            raise UsageError("the conntrack interval must be at least 100ms")
        self.interval_ns = interval_ns
        self.every_interval = every_interval
        self.previous: dict[int, Reading] = {}
        self.first_scan_done = False
        self.next_scan_ns = 0
        self.scans = 0
        self.read_errors = 0
        self.netns_skipped = 0
        self.netns_gone = 0
        self.last_scan_s = 0.0

    def start(self) -> None:
        from dnstrace.kernel.load import require_privileges  # noqa: PLC0415

        require_privileges()  # setns into other namespaces needs CAP_SYS_ADMIN
        self.tick(time.time_ns())  # baseline of the namespaces that exist now

    def tick(self, now_ns: int) -> list[Event]:
        if now_ns < self.next_scan_ns:
            return []
        self.next_scan_ns = now_ns + self.interval_ns
        from dnstrace.enrich.netdev import in_netns, netns_list  # noqa: PLC0415

        started = time.monotonic()
        events = []
        seen = set()
        for ref in netns_list():
            if ref.inode not in self.previous and len(self.previous) >= MAX_NETNS:
                self.netns_skipped += 1
                continue
            try:
                now = in_netns(ref.path, read_here)
            except (OSError, TimeoutError):
                self.read_errors += 1
                continue
            if now is None:
                continue
            seen.add(ref.inode)
            before = self.previous.get(ref.inode)
            self.previous[ref.inode] = now
            if before is None and not self.first_scan_done:
                continue  # history from before we started is not a delta of ours
            # A namespace first seen after start is new: its counters began at zero.
            event = build_event(ref.label, ref.inode, now, before, now_ns)
            if interesting(event, self.every_interval):
                events.append(event)
        for inode in list(self.previous):
            if inode not in seen:
                del self.previous[inode]
                self.netns_gone += 1
        self.first_scan_done = True
        self.scans += 1
        self.last_scan_s = time.monotonic() - started
        return events

    def stats(self) -> dict[str, object]:
        return {"scans": self.scans, "netns_tracked": len(self.previous), "netns_skipped": self.netns_skipped,
                "netns_gone": self.netns_gone, "read_errors": self.read_errors,
                "last_scan_ms": round(self.last_scan_s * 1000, 1)}
