"""Answering from rollups: which queries they cover, the SQL that writes them, and reading histograms back.

A ``top`` or ``timeseries`` query whose filters and group key are all rollup
dimensions (no pid, name, daddr, rule or min-latency filter; time buckets a whole
number of minutes) is answered from rollups for the whole minutes of its range plus
the raw events of the partial minutes at either end, so counts, failures, max and
hosts are exact. Everything else is answered from raw events. Either way p50/p99 are
read from a histogram on that grid (``HistogramAnswer``, ``latency.quantiles``), so a
query gives the same p99 from rollups as from raw events, and as ``top`` for the same
events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnstrace.latency import BUCKETS_PER_OCTAVE, quantiles
from dnstrace.wire.query import QuerySpec
from dnstrace.wire.rollup import DIMENSIONS, MINUTE_NS

# QuerySpec list filters -> column; only these may be set for a rollup answer.
FILTERS = {"hosts": "host", "kinds": "kind", "comms": "comm", "containers": "container", "pods": "pod",
           "namespaces": "namespace", "servers": "server", "rcodes": "rcode", "errors": "error",
           "reasons": "reason"}
UNCOVERED_FILTERS = ("pids", "rules", "name_glob", "min_latency_ns")

def bucket_sql(expr: str, dialect_name: str) -> str:
    """SQL for the latency bucket of ``expr`` (``latency.bucket_of``; NULL stays NULL, below 1 ns is bucket 0)."""
    if dialect_name == "clickhouse":
        return (f"if(isNull({expr}), NULL, if(assumeNotNull({expr}) < 1, toInt32(0), "
                f"toInt32(floor(log2(toFloat64(assumeNotNull({expr}))) * {BUCKETS_PER_OCTAVE}))))")
    return (f"CASE WHEN {expr} IS NULL THEN NULL WHEN {expr} < 1 THEN 0 "
            f"ELSE CAST(floor(log2({expr}) * {BUCKETS_PER_OCTAVE}) AS INTEGER) END")


def ingest_select(source: str, dialect_name: str, host_expr: str = "host", where: str = "") -> str:
    """SELECT producing rollup rows from an events relation ``source`` (column order of the table)."""
    minute = (f"intDiv(ts, {MINUTE_NS}) * {MINUTE_NS}" if dialect_name == "clickhouse"
              else f"(ts // {MINUTE_NS}) * {MINUTE_NS}")
    dims = ", ".join(host_expr if d == "host" else d for d in DIMENSIONS)
    return (f"SELECT {minute} AS minute, {dims}, failed, {bucket_sql('latency_ns', dialect_name)} AS lat_bucket, "
            f"count(*) AS events, max(latency_ns) AS latency_max FROM {source} "
            + (f"WHERE {where} " if where else "") + f"GROUP BY minute, {', '.join(DIMENSIONS)}, failed, lat_bucket")


def covered(spec: QuerySpec) -> bool:
    """Can rollups answer this spec?"""
    if spec.mode not in ("top", "timeseries"):
        return False
    if any(getattr(spec, name) for name in UNCOVERED_FILTERS):
        return False
    key = spec.group_by or ("comm" if spec.mode == "top" else "")
    if key and key not in DIMENSIONS:
        return False
    if spec.mode == "timeseries" and spec.bucket_ns % MINUTE_NS:
        return False
    if spec.since_ns and spec.until_ns:
        first_full = -(-spec.since_ns // MINUTE_NS) * MINUTE_NS
        if first_full >= (spec.until_ns // MINUTE_NS) * MINUTE_NS:
            return False  # no whole minute inside: raw is as cheap
    return True


@dataclass
class HistogramAnswer:
    """Turns a histogram query's (group..., lat_bucket, count, failures, max) rows into result rows.

    Both rollup and raw-event plans of ``top`` and ``timeseries`` produce such rows (one per group and
    latency bucket), so both read quantiles the same way."""

    spec: QuerySpec
    group_columns: list[str]  # e.g. ["comm"] or ["bucket_ts", "host"]

    def finish(self, raw_rows: list[tuple[Any, ...]], host_rows: list[tuple[Any, ...]]) -> tuple[list[str], list[dict[str, Any]]]:
        ngroup = len(self.group_columns)
        hosts_of = {tuple(row[:ngroup]): int(row[ngroup]) for row in host_rows}
        groups: dict[tuple[Any, ...], _Group] = {}
        for raw in raw_rows:
            key = tuple(raw[:ngroup])
            lat_bucket, count, failures, latency_max = raw[ngroup:]
            g = groups.get(key)
            if g is None:
                g = groups[key] = _Group()
            g.count += int(count)
            g.failures += int(failures or 0)
            if latency_max is not None and (g.max is None or latency_max > g.max):
                g.max = int(latency_max)
            if lat_bucket is not None:
                g.hist[int(lat_bucket)] = g.hist.get(int(lat_bucket), 0) + int(count)
        rows = []
        for key, g in groups.items():
            row: dict[str, Any] = dict(zip(self.group_columns, key, strict=True))
            p50, p99 = quantiles(g.hist, (0.5, 0.99), g.max)
            row.update(count=g.count, failures=g.failures, p50_ns=p50, p99_ns=p99, max_ns=g.max,
                       hosts=hosts_of.get(key, 0))
            rows.append(row)
        spec = self.spec
        limit = spec.limit or (20 if spec.mode == "top" else 10000)
        if spec.mode == "top":
            order = {"p99": "p99_ns", "count": "count", "failures": "failures", "max": "max_ns"}[spec.order_by or "p99"]
            rows.sort(key=lambda r: (r[order] is None, -(r[order] or 0), -r["count"]))
        else:
            rows.sort(key=lambda r: tuple((r[c] is None, r[c] if r[c] is not None else 0)
                                          for c in self.group_columns))
        rows = rows[:limit]
        columns = self.group_columns + ["count", "failures", "p50_ns", "p99_ns", "max_ns", "hosts"]
        return columns, rows


class _Group:
    """What one result row adds up: events, failures, max latency and the latency histogram."""

    __slots__ = ("count", "failures", "max", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.failures = 0
        self.max: int | None = None
        self.hist: dict[int, int] = {}
