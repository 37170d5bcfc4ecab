"""Prometheus /metrics for ``dnstrace collector``: streams, batches, refusals, queries, the store's queue
and back-pressure, and hosts behind, read live.

Served on ``collector.metrics_addr`` (HOST:PORT, empty = off). Values are read from
``CollectorServer.stats()`` at scrape time (no second set of counters to keep in step, nothing
here can slow ingest): ``dnstrace_collector_<name>_total`` for counters and
``dnstrace_collector_<name>`` for what is in progress now (streams open, queries running, batch
bytes in flight, the store's queue). What an operator needs to see that collectors cannot keep
up: ``store_queued_events`` / ``store_held_events`` near ``store_held_max_events`` with
``store_submit_waits`` rising (streams are held back, agents spool), refusals by reason,
``store_errors``, and ``store_hosts_behind_count``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dnstrace.errors import UsageError
from dnstrace.units import parse_addr

if TYPE_CHECKING:
    from dnstrace.collector.server import CollectorServer

GAUGES = ("streams_open", "queries_running", "inflight_bytes")
STORE_GAUGES = ("queued_batches", "queued_events", "watermarks", "held_events", "held_max_events",
                "hosts_behind_count")


class _StatsCollector:
    def __init__(self, server: CollectorServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        stats = dict(self.server.stats())
        store = stats.pop("store", {})
        for name, value in sorted(stats.items()):
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            if name in GAUGES:
                yield GaugeMetricFamily(f"dnstrace_collector_{name}", name.replace("_", " "), value=value)
            else:
                yield CounterMetricFamily(f"dnstrace_collector_{name}", name.replace("_", " "), value=value)
        for name, value in sorted(store.items()):
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            family = GaugeMetricFamily if name in STORE_GAUGES else CounterMetricFamily
            yield family(f"dnstrace_collector_store_{name}", f"store: {name.replace('_', ' ')}", value=value)
        up = GaugeMetricFamily("dnstrace_collector_store_up", "1 when the store answered the last scrape's query")
        up.add_metric([], 0 if "hosts_behind_error" in store else 1)
        yield up


def serve(server: CollectorServer, addr: str) -> Any:
    """Serve /metrics on ``addr`` (HOST:PORT); returns the HTTP server (``shutdown()`` it on exit)."""
    from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

    registry = CollectorRegistry()
    registry.register(_StatsCollector(server))
    host, port = parse_addr(addr, "collector.metrics_addr")
    try:
        http_server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        raise UsageError(f"cannot serve collector metrics on {addr}: {err.strerror}") from None
    return http_server
