"""Prometheus /metrics for the collector: ingest queue depth, back-pressure, refusals, store and hosts behind.

Served on ``collector.metrics_addr`` (HOST:PORT, empty = off). Read at scrape time from
``CollectorServer.stats()``: nothing is counted twice and nothing here can slow ingest.
What an operator needs to see that collectors cannot keep up: ``queue_events`` near
``held_max_events`` with ``submit_waits`` rising (streams are being held back, agents
spool), ``batches_rejected`` by reason, ``store_errors``, and hosts whose stored events
stop well before now.
"""

from __future__ import annotations

from dnstrace.agent.metrics import parse_addr
from dnstrace.errors import UsageError

_SERVER_COUNTERS = {
    "batches_received": "batches received on ingest streams",
    "batches_rejected": "batches refused (stream ended with an error)",
    "rejected_malformed": "batches refused as malformed",
    "rejected_version": "batches refused for an unsupported schema version",
    "rejected_oversized": "batches refused for exceeding collector.max_batch_bytes",
    "rejected_auth": "calls refused for a missing or wrong token",
    "store_errors": "batches the store failed to write (agents resend them)",
    "streams": "ingest streams opened",
    "queries": "queries answered",
    "query_errors": "queries that failed",
}
_STORE_COUNTERS = {
    "batches_stored": "batches committed", "batches_duplicate": "replayed batches acknowledged without storing",
    "batches_refused": "batches the store refused on content", "events_stored": "events committed",
    "commits": "group commits", "submit_waits": "times a stream was held back because the ingest queue was full",
}
_STORE_GAUGES = {
    "queued_batches": "batches waiting for the writer", "queued_events": "events waiting for the writer",
    "held_events": "decoded events held (queued plus being written)",
    "held_max_events": "bound on held events; streams wait beyond it",
    "hosts_behind_count": "hosts whose newest stored event is over a minute old (heard from within the hour)",
}


class _StatsCollector:
    def __init__(self, server):
        self.server = server

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.server.stats()
        store = stats.get("store", {})
        for name, doc in _SERVER_COUNTERS.items():
            yield CounterMetricFamily(f"dnstrace_collector_{name}", doc, value=stats.get(name, 0))
        for name, doc in _STORE_COUNTERS.items():
            yield CounterMetricFamily(f"dnstrace_collector_store_{name}", doc, value=store.get(name, 0))
        for name, doc in _STORE_GAUGES.items():
            yield GaugeMetricFamily(f"dnstrace_collector_store_{name}", doc, value=store.get(name, 0))
        up = GaugeMetricFamily("dnstrace_collector_store_up", "1 when the store answered the last scrape's query")
        up.add_metric([], 0 if "hosts_behind_error" in store else 1)
        yield up


def serve(server, addr: str):
    """Start the /metrics endpoint for ``server``; returns the HTTP server (``shutdown()`` to stop)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_StatsCollector(server))
    host, port = parse_addr(addr)
    try:
        http_server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        raise UsageError(f"cannot serve collector metrics on {addr}: {err.strerror}") from None
    return http_server
