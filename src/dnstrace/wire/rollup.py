"""Per-minute rollup rows: their dimensions and columns, as stores write them and ``summary`` agents ship them.

At ingest each store also writes, in the same transaction/insert as the events, one
``rollups`` row per (minute, host, kind, comm, container, pod, namespace, server,
rcode, error, reason, qtype, failed, latency bucket) with the number of events and
their maximum latency. Latency buckets are the one grid of ``dnstrace.latency``, so
one row per non-empty bucket is a sparse histogram and summing rows merges histograms.
How queries read them is the collector's (``dnstrace.collector.query.rollup``).
"""

from __future__ import annotations

MINUTE_NS = 60 * 10**9

# Rollup dimensions (also the group keys a rollup can answer), as event columns.
DIMENSIONS = ("host", "kind", "comm", "container", "pod", "namespace", "server", "rcode", "error", "reason",
              "qtype")
# A rollup row as agents ship it in ``summary`` mode (``agent.summary``; host comes from the batch envelope):
# (name, codec kind). Stores add these rows to their rollups as they are.
ROW_COLUMNS: tuple[tuple[str, str], ...] = (("minute", "int"),) + tuple(
    (d, "str") for d in DIMENSIONS if d != "host") + (("failed", "bool"), ("lat_bucket", "int"), ("events", "int"),
                                                      ("latency_max", "int"))
