"""What ``dnstrace top`` shows: a snapshot of this node's aggregator and findings (``TopModel``) or of the fleet (``FleetModel``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Snapshots(Protocol):
    """What the terminal loop reads: ``TopModel`` (this node) or ``FleetModel`` (the fleet)."""

    signals: str

    def snapshot(self, by: str = "process", window: str = "10s", detail_pid: int | None = None,
                 full: bool = True) -> dict: ...


class TopModel:
    """The aggregator and findings engine behind one lock; ``snapshot()`` is what the view shows."""

    def __init__(self, host: str = ""):
        from dnstrace.cli.findings import LockedSinks  # noqa: PLC0415
        from dnstrace.findings.engine import FindingsEngine  # noqa: PLC0415
        from dnstrace.sinks.aggregate import Aggregator  # noqa: PLC0415

        self.host = host
        self.aggregator = Aggregator()
        self.findings = FindingsEngine(host=host)
        self.sinks = LockedSinks([self.aggregator, self.findings])
        self.signals = "attaching"
        self.delivery_stats: Callable[[], dict | None] | None = None  # the shipper's stats under `top --agent`

    def snapshot(self, by: str = "process", window: str = "10s", detail_pid: int | None = None,
                 full: bool = True) -> dict:
        """What the view shows. ``full=False`` (the table screen, every second) leaves out the
        nameserver rows, which only the detail screen and ``--once`` show: they cost a third of a refresh."""
        with self.sinks.lock:
            rows = self.aggregator.rows(by, window)
            details = {}
            if detail_pid is not None:
                details[detail_pid] = self.aggregator.process_detail(detail_pid)
            servers = self.aggregator.server_rows() if full or detail_pid is not None else []
            return {"ts": time.time_ns(), "host": self.host, "by": by, "window": window, "signals": self.signals,
                    "rows": rows, "findings": self.findings.current(), "servers": servers,
                    "node": self.aggregator.node_view(), "details": details,
                    "agent_losses": self.aggregator.agent_losses(),
                    "delivery": self.delivery_stats() if self.delivery_stats is not None else None,
                    "stats": {"aggregate": self.aggregator.stats(), "findings": self.findings.stats()}}


FLEET_WINDOWS_S = {"10s": 300, "1m": 3600}  # the view's two windows, stretched for shipped data
FLEET_LOOKUP_KINDS = ("lookup", "gai")  # the first kind the collector has rows for is the lookups


class FleetModel:
    """The fleet view's data: collector queries per process name (or host) and the fleet's findings.

    ``snapshot()`` has the shape ``TopView`` renders: a row's PID column holds the number
    of hosts, CONTAINER the host (per-host rows) or "N hosts"."""

    def __init__(self, client, refresh_s: float = 5.0, clock=time.time_ns):
        self.client = client
        self.refresh_s = refresh_s
        self.clock = clock
        self.signals = "fleet"
        self.error = ""
        self._cache: dict[tuple, tuple[float, dict]] = {}

    def _query(self, **spec_fields) -> list[dict]:
        from dnstrace.wire.query import QuerySpec  # noqa: PLC0415

        _, rows = self.client.query(QuerySpec(**spec_fields))
        return rows

    def _build(self, by: str, window: str) -> dict:
        window_s = FLEET_WINDOWS_S.get(window, 300)
        since = self.clock() - window_s * 1_000_000_000
        group = "comm" if by == "process" else "host"
        lookups = []
        for kind in FLEET_LOOKUP_KINDS:
            lookups = self._query(mode="top", kinds=[kind], since_ns=since, group_by=group, limit=200)
            if lookups:
                break
        rows = {}
        for r in lookups:
            rows[r[group]] = {"pid": r["hosts"], "comm": r[group] if group == "comm" else "",
                              "container": (f"{r['hosts']} hosts" if group == "comm" else r[group]),
                              "lookups": r["count"], "lookups_per_s": r["count"] / window_s,
                              "p50_ns": r["p50_ns"], "p99_ns": r["p99_ns"], "max_ns": r["max_ns"],
                              "failures": r["failures"]}
        for kind, field in (("dns", "unanswered"), ("syn_retry", "syn_retries"), ("drop", "drops")):
            spec = {"mode": "top", "kinds": [kind], "since_ns": since, "group_by": group, "order_by": "count",
                    "limit": 200}
            if kind == "dns":
                spec["failed_only"] = True  # unanswered and error rcodes: what went wrong on the wire
            for r in self._query(**spec):
                row = rows.setdefault(r[group], {"pid": r["hosts"], "comm": r[group] if group == "comm" else "",
                                                 "container": (f"{r['hosts']} hosts" if group == "comm"
                                                               else r[group])})
                row[field] = r["count"]
        findings = []
        for f in self._query(mode="findings", since_ns=since, limit=50):
            hosts = ", ".join(f.get("host_list") or [])
            findings.append({"rule": f["rule"], "severity": f.get("severity"), "pids": [],
                             "summary": f"on {f['hosts']} host(s) ({hosts}), {f['count']} reports: "
                                        f"{f.get('summary') or ''}", "fix": f.get("fix")})
        return {"ts": self.clock(), "host": f"fleet via {self.client.address}", "by": by, "window": window,
                "fleet": True, "window_label": f"{window_s // 60}m" if window_s < 3600 else f"{window_s // 3600}h",
                "signals": self.signals, "rows": list(rows.values()), "findings": findings, "servers": [],
                "node": {}, "details": {}}

    def snapshot(self, by: str = "process", window: str = "10s", detail_pid: int | None = None,
                 full: bool = False) -> dict:
        """The latest fleet snapshot; queries the collector again once ``refresh_s`` has passed."""
        from dnstrace.errors import DnstraceError  # noqa: PLC0415

        key = (by, window)
        cached = self._cache.get(key)
        if cached is None or time.monotonic() - cached[0] >= self.refresh_s:
            try:
                snap = self._build(by, window)
                self.error = ""
            except DnstraceError as err:  # unreachable collector: keep the last rows, say why
                self.error = err.message
                if cached is None:
                    raise
                snap = dict(cached[1])
            self._cache[key] = (time.monotonic(), snap)
            cached = self._cache[key]
        snap = dict(cached[1])
        if self.error:
            snap["host"] = f"{snap['host']} (stale: {self.error})"
        return snap
