"""Prometheus /metrics for the agent: histograms and counters by comm, container, nameserver and reason.

``make_sink(config)`` returns a Sink serving ``agent.metrics_addr`` (HOST:PORT, empty =
off) with prometheus-client on its own registry. Label cardinality is bounded:
each label keeps at most a fixed number of distinct values (first come, first
kept); later values are reported as ``other`` and counted in
``dnstrace_metrics_label_overflow_total``. Query names never become labels.
Latency histograms use octave edges of the one grid (``dnstrace.latency``) as bucket
bounds; failures are ``events.is_failed``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dnstrace.errors import UsageError
from dnstrace.events import CONNTRACK_COUNTERS, is_failed
from dnstrace.flow import Sink
from dnstrace.latency import PROMETHEUS_BUCKETS_S
from dnstrace.units import parse_addr

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

LABEL_LIMITS = {"comm": 200, "container": 200, "server": 64, "reason": 64, "error": 32, "rcode": 16,
                "destination": 128, "source": 32, "counter": 64}
OTHER = "other"


class LabelGuard:
    """Keeps at most ``limit`` distinct values of one label; the rest become ``other``."""

    def __init__(self, limit: int, on_overflow):
        self.limit = limit
        self.values: set[str] = set()
        self.on_overflow = on_overflow

    def __call__(self, value) -> str:
        text = "" if value is None else str(value)[:64]
        if text in self.values:
            return text
        if len(self.values) < self.limit:
            self.values.add(text)
            return text
        self.on_overflow()
        return OTHER


class MetricsSink(Sink):
    name = "metrics"

    def __init__(self, addr: str | None = None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # noqa: PLC0415

        self.registry = CollectorRegistry()
        self.overflow = Counter("dnstrace_metrics_label_overflow", "label values folded into 'other'",
                                ["label"], registry=self.registry)
        self.guards = {name: LabelGuard(limit, lambda n=name: self.overflow.labels(n).inc())
                       for name, limit in LABEL_LIMITS.items()}
        r = self.registry
        self.lookup_seconds = Histogram("dnstrace_lookup_duration_seconds", "whole name lookups (libc or wire)",
                                        ["comm", "container"], buckets=PROMETHEUS_BUCKETS_S, registry=r)
        self.lookup_failures = Counter("dnstrace_lookup_failures", "lookups that failed, by error",
                                       ["comm", "container", "error"], registry=r)
        self.query_seconds = Histogram("dnstrace_dns_answer_seconds", "query to answer, by nameserver",
                                       ["server"], buckets=PROMETHEUS_BUCKETS_S, registry=r)
        self.queries = Counter("dnstrace_dns_queries", "DNS queries on the wire",
                               ["comm", "container", "server"], registry=r)
        self.unanswered = Counter("dnstrace_dns_unanswered", "queries never answered within the timeout",
                                  ["comm", "container", "server"], registry=r)
        self.rcodes = Counter("dnstrace_dns_answers", "answers by rcode", ["server", "rcode"], registry=r)
        self.truncated = Counter("dnstrace_dns_truncated", "answers with the TC flag", ["server"], registry=r)
        self.tcp_fallbacks = Counter("dnstrace_dns_tcp_fallbacks", "TCP retries after truncated answers",
                                     ["comm", "container"], registry=r)
        self.syn_retries = Counter("dnstrace_tcp_syn_retransmits", "SYN retransmissions",
                                   ["comm", "container", "destination"], registry=r)
        self.drops = Counter("dnstrace_packet_drops", "packets dropped by the kernel, by reason",
                             ["reason"], registry=r)
        self.conntrack = Counter("dnstrace_conntrack_events", "conntrack counter deltas",
                                 ["counter"], registry=r)
        self.conntrack_entries = Gauge("dnstrace_conntrack_entries", "entries in the conntrack table",
                                       ["netns"], registry=r)
        self.findings = Gauge("dnstrace_findings_active", "active findings by rule", ["rule", "severity"],
                              registry=r)
        self.events = Counter("dnstrace_events", "events seen by kind", ["kind"], registry=r)
        self.agent_lost = Counter("dnstrace_agent_lost_records", "records the agent itself lost, by source and "
                                  "counter (ring buffer full, kernel misses, sampling, full tables)",
                                  ["source", "counter"], registry=r)
        self.server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._netns_seen: set[str] = set()
        self._lookup_kind: str | None = None
        if addr:
            self.serve(addr)

    def serve(self, addr: str) -> None:
        from prometheus_client import start_http_server  # noqa: PLC0415

        host, port = parse_addr(addr, "agent.metrics_addr")
        try:
            self.server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise UsageError(f"cannot serve metrics on {addr}: {err.strerror}") from None

    @property
    def port(self) -> int | None:
        return self.server.server_port if self.server else None

    def handle(self, events: list[dict]) -> None:
        g = self.guards
        for e in events:
            kind = e.get("kind")
            if kind == "agent":
                for counter, value in (e.get("losses") or {}).items():
                    if isinstance(value, int) and value > 0:
                        self.agent_lost.labels(g["source"](e.get("source")), g["counter"](counter)).inc(value)
                continue
            if kind not in ("gai", "lookup", "dns", "syn_retry", "drop", "conntrack", "connect", "finding"):
                continue
            self.events.labels(kind).inc()
            comm, container = g["comm"](e.get("comm")), g["container"](e.get("container"))
            if kind == "lookup":
                self._lookup_kind = "lookup"
            if kind == "lookup" or (kind == "gai" and self._lookup_kind is None):
                if e.get("latency_ns") is not None:
                    self.lookup_seconds.labels(comm, container).observe(e["latency_ns"] / 1e9)
                if is_failed(e):
                    self.lookup_failures.labels(comm, container, g["error"](e.get("error"))).inc()
            elif kind == "dns":
                if e.get("tcp_fallback"):
                    self.tcp_fallbacks.labels(comm, container).inc()
                # Every query on the wire counts for its server, retransmits included: glibc re-sends the
                # same id to the *next* nameserver, and skipping those hid that server's answers.
                server = g["server"](e.get("server"))
                self.queries.labels(comm, container, server).inc()
                if e.get("answered") is False:
                    self.unanswered.labels(comm, container, server).inc()
                    continue
                if e.get("latency_ns") is not None:
                    self.query_seconds.labels(server).observe(e["latency_ns"] / 1e9)
                if e.get("rcode"):
                    self.rcodes.labels(server, g["rcode"](e["rcode"])).inc()
                if e.get("tc"):
                    self.truncated.labels(server).inc()
            elif kind == "syn_retry":
                dest = g["destination"](f"{e.get('daddr')}:{e.get('dport')}")
                self.syn_retries.labels(comm, container, dest).inc()
            elif kind == "drop":
                self.drops.labels(g["reason"](e.get("reason"))).inc(int(e.get("count") or 1))
            elif kind == "conntrack":
                for name in CONNTRACK_COUNTERS:
                    if e.get(name):
                        self.conntrack.labels(name).inc(int(e[name]))
                netns = str(e.get("netns", ""))
                if e.get("count") is not None and (netns in self._netns_seen or len(self._netns_seen) < 64):
                    self._netns_seen.add(netns)
                    self.conntrack_entries.labels(netns).set(int(e["count"]))

    def watch_gauges(self, sink_name: str, read) -> None:
        """Export ``read()`` -> {name: number} as ``dnstrace_<name>`` gauges, read at scrape time (spool depth)."""
        if not hasattr(self, "_watched"):
            self._watched: list = []
            self.registry.register(_WatchedGauges(self._watched))
        self._watched.append((sink_name, read))

    def set_findings(self, findings: list[dict]) -> None:
        """Active findings as a gauge (rule ids are a fixed set: bounded)."""
        self.findings.clear()
        for f in findings:
            self.findings.labels(f["rule"], f["severity"]).inc()

    def stats(self) -> dict:
        return {"label_values": {name: len(guard.values) for name, guard in self.guards.items()},
                "port": self.port}

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class _WatchedGauges:
    """A prometheus-client collector over other sinks' live figures (``MetricsSink.watch_gauges``)."""

    def __init__(self, watched: list):
        self.watched = watched

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        for sink_name, read in self.watched:
            try:
                values = read()
            except Exception:  # a failing sink must not break the scrape
                continue
            for name, value in sorted(values.items()):
                family = GaugeMetricFamily(f"dnstrace_{name}", name.replace("_", " "), labels=["sink"])
                family.add_metric([sink_name], float(value))
                yield family


def make_sink(config) -> MetricsSink | None:
    addr = config["agent.metrics_addr"] if config is not None else ""
    return MetricsSink(addr) if addr else None
