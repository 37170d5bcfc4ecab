"""The query engine: filters, aggregations and findings, rendered as SQL for DuckDB or ClickHouse.

A ``QuerySpec`` (``dnstrace.wire.query``) says what the user asked (``dnstrace query`` flags or the gRPC
``QueryRequest``); ``build_sql(spec, dialect)`` turns it into one SQL statement with
bound parameters. Modes:

- ``events``: raw rows (most recent ``limit``, printed oldest first);
- ``top``: per group (comm, host, container, name, server, ...) count, failures,
  p50/p99/max latency and number of hosts, ordered by p99, count or failures;
- ``timeseries``: the same figures per time bucket (optionally per group);
- ``findings``: which rules fired on which hosts, first and last seen (fleet view).

User values never enter the SQL text: they are parameters; group keys and
orderings come from whitelists. ``plan_query`` answers ``top`` and ``timeseries`` as a
latency histogram per group (the grid of ``dnstrace.latency``, so p50/p99 are those
``top`` shows for the same events): from the per-minute rollups when they cover the
spec (``wire.rollup``: exact counts, failures, max and hosts) and from raw events
otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnstrace.collector.query import rollup
from dnstrace.wire.query import DEFAULT_LIMIT, EVENT_SELECT, GROUP_KEYS, QuerySpec
from dnstrace.wire.rollup import MINUTE_NS


class Dialect:
    """SQL differences between the stores."""

    name = "generic"

    def param(self, key: str) -> str:
        raise NotImplementedError

    def like_escaped(self, expr: str, param: str) -> str:
        raise NotImplementedError

    def bucket(self, bucket_param: str) -> str:
        raise NotImplementedError

    def sorted_distinct(self, expr: str) -> str:
        raise NotImplementedError

    def is_true(self, expr: str) -> str:
        raise NotImplementedError


class DuckDialect(Dialect):
    name = "duckdb"

    def param(self, key: str) -> str:
        return f"${key}"

    def like_escaped(self, expr: str, param: str) -> str:
        return f"{expr} LIKE {param} ESCAPE '\\'"

    def bucket(self, bucket_param: str) -> str:
        return f"(ts // {bucket_param}) * {bucket_param}"

    def sorted_distinct(self, expr: str) -> str:
        return f"list_sort(list(DISTINCT {expr}))"

    def is_true(self, expr: str) -> str:
        return expr


class ClickHouseDialect(Dialect):
    name = "clickhouse"

    def param(self, key: str) -> str:
        return f"%({key})s"

    def like_escaped(self, expr: str, param: str) -> str:
        return f"{expr} LIKE {param}"  # backslash is ClickHouse's LIKE escape

    def bucket(self, bucket_param: str) -> str:
        return f"intDiv(ts, {bucket_param}) * {bucket_param}"

    def sorted_distinct(self, expr: str) -> str:
        return f"arraySort(groupUniqArray({expr}))"

    def is_true(self, expr: str) -> str:
        return f"{expr} = 1"


def glob_to_like(glob: str) -> str:
    out = []
    for ch in glob:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


class _Builder:
    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self.params: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        key = f"p{len(self.params)}"
        self.params[key] = value
        return self.dialect.param(key)

    def where(self, spec: QuerySpec) -> str:
        clauses = []
        if spec.since_ns:
            clauses.append(f"ts >= {self.bind(spec.since_ns)}")
        if spec.until_ns:
            clauses.append(f"ts < {self.bind(spec.until_ns)}")
        for column, values in (("host", spec.hosts), ("pid", spec.pids), ("comm", spec.comms),
                               ("container", spec.containers), ("pod", spec.pods),
                               ("namespace", spec.namespaces), ("kind", spec.kinds), ("server", spec.servers),
                               ("rcode", spec.rcodes), ("error", spec.errors), ("reason", spec.reasons),
                               ("rule", spec.rules)):
            if values:
                clauses.append(f"{column} IN ({', '.join(self.bind(v) for v in values)})")
        if spec.name_glob:
            clauses.append(self.dialect.like_escaped("coalesce(qname, name)", self.bind(glob_to_like(spec.name_glob))))
        if spec.min_latency_ns:
            clauses.append(f"latency_ns >= {self.bind(spec.min_latency_ns)}")
        if spec.failed_only:
            clauses.append(self.dialect.is_true("failed"))
        return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def build_sql(spec: QuerySpec, dialect: Dialect, table: str = "events") -> tuple[str, dict[str, Any], list[str]]:
    """``events`` and ``findings`` modes: (sql, params, column names of the result)."""
    spec.validate()
    if spec.mode not in ("events", "findings"):
        raise ValueError(f"mode {spec.mode!r} is answered by a histogram plan (plan_query)")
    b = _Builder(dialect)
    where = b.where(spec)
    limit = spec.limit or DEFAULT_LIMIT[spec.mode]
    if spec.mode == "events":
        columns = list(EVENT_SELECT)
        sql = f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY ts DESC LIMIT {int(limit)}"
        return sql, b.params, columns
    # findings: the fleet view of rules
    finding_where = where + (" AND " if where else " WHERE ") + f"kind = {b.bind('finding')}"
    columns = ["rule", "severity", "count", "hosts", "host_list", "first_ts", "last_ts", "sample"]
    sql = (f"SELECT rule, max(severity) AS severity, count(*) AS count, count(DISTINCT host) AS hosts, "
           f"{dialect.sorted_distinct('host')} AS host_list, min(ts) AS first_ts, max(ts) AS last_ts, "
           f"min(attrs) AS sample FROM {table}{finding_where} GROUP BY rule "
           f"ORDER BY hosts DESC, count DESC LIMIT {int(limit)}")
    return sql, b.params, columns


def shape_rows(spec: QuerySpec, columns: list[str], raw_rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Result tuples -> dicts; event rows get the agent's field names back (attrs merged)."""
    import json

    from dnstrace.wire.codec import row_to_event

    rows = [dict(zip(columns, r, strict=False)) for r in raw_rows]
    if spec.mode == "events":
        rows.reverse()  # most recent N, printed oldest first
        return [row_to_event(r) for r in rows]
    for row in rows:
        for key in ("count", "failures", "hosts"):
            if key in row and row[key] is not None:
                row[key] = int(row[key])
        if "host_list" in row:
            row["host_list"] = list(row["host_list"] or [])
        if "sample" in row:
            sample = row.pop("sample")
            try:
                extra = json.loads(sample) if sample else {}
            except (ValueError, RecursionError):
                extra = {}
            if isinstance(extra, dict):
                row["summary"] = extra.get("summary")
                row["fix"] = extra.get("fix")
    return rows


@dataclass
class Plan:
    """How a store answers a spec: one SQL statement, its rows shaped by ``shape_rows`` or by ``histogram``."""

    sql: str
    params: dict[str, Any]
    columns: list[str]
    histogram: rollup.HistogramAnswer | None = None  # top and timeseries: the SQL yields (group..., bucket, figures) rows
    hosts_sql: str = ""  # histogram plans: distinct hosts per group (same params)
    reads_rollups: bool = False  # the histogram comes from the per-minute rollups (plus raw partial minutes)


def plan_query(spec: QuerySpec, dialect: Dialect, has_rollups: bool = True) -> Plan:
    """``top`` and ``timeseries`` as a latency histogram per group, from rollups when they cover the spec (see
    ``wire.rollup``) and from raw events otherwise; ``events`` and ``findings`` as plain SQL."""
    spec.validate()
    if spec.mode not in ("top", "timeseries"):
        sql, params, columns = build_sql(spec, dialect)
        return Plan(sql, params, columns)
    b = _Builder(dialect)
    key = spec.group_by or ("comm" if spec.mode == "top" else "")
    from_rollups = has_rollups and rollup.covered(spec)
    # Every source row: ts, host, group_key, failed, lat_bucket, events, latency_max.
    group = f"{GROUP_KEYS[key]} AS group_key, " if key else ""
    if dialect.name == "clickhouse":
        one, bucket = "toUInt64(1)", rollup.bucket_sql("latency_ns", "clickhouse")
    else:
        one, bucket = "CAST(1 AS BIGINT)", rollup.bucket_sql("latency_ns", "duckdb")
    raw_select = f"SELECT ts, host, {group}failed, {bucket} AS lat_bucket, {one} AS events, latency_ns AS latency_max"
    if from_rollups:
        parts = _rollup_parts(spec, dialect, b, group, raw_select)
    else:
        parts = [f"{raw_select} FROM events{b.where(spec)}"]
    group_exprs, group_names, group_columns = [], [], []
    if spec.mode == "timeseries":
        group_exprs.append(f"{dialect.bucket(b.bind(int(spec.bucket_ns)))} AS bucket_ts")
        group_names.append("bucket_ts")
        group_columns.append("bucket_ts")
    if key:
        group_exprs.append("group_key")
        group_names.append("group_key")
        group_columns.append(key)
    failures = f"sum(CASE WHEN {dialect.is_true('failed')} THEN events ELSE 0 END)"
    source = f"({' UNION ALL '.join(parts)}) AS u"
    select = group_exprs + ["lat_bucket", "sum(events)", failures, "max(latency_max)"]
    sql = f"SELECT {', '.join(select)} FROM {source} GROUP BY {', '.join(group_names + ['lat_bucket'])}"
    # Distinct hosts do not add up over latency buckets: a second, coarser grouping of the same rows.
    hosts_sql = (f"SELECT {', '.join(group_exprs + ['count(DISTINCT host)'])} FROM {source}"
                 + (f" GROUP BY {', '.join(group_names)}" if group_names else ""))
    return Plan(sql, b.params, group_columns, rollup.HistogramAnswer(spec, group_columns), hosts_sql, from_rollups)


def _rollup_parts(spec: QuerySpec, dialect: Dialect, b: _Builder, group: str, raw_select: str) -> list[str]:
    """The rollups of the whole minutes in range, and the raw events of the partial minutes at either end."""
    minute = MINUTE_NS
    first_full = -(-spec.since_ns // minute) * minute if spec.since_ns else 0
    end_full = (spec.until_ns // minute) * minute if spec.until_ns else 0
    dims: list[str] = []
    for name, column in rollup.FILTERS.items():
        values = getattr(spec, name)
        if values:
            dims.append(f"{column} IN ({', '.join(b.bind(v) for v in values)})")
    if spec.failed_only:
        dims.append(dialect.is_true("failed"))
    rollup_where = list(dims)
    if first_full:
        rollup_where.append(f"minute >= {b.bind(first_full)}")
    if end_full:
        rollup_where.append(f"minute < {b.bind(end_full)}")
    parts = [f"SELECT minute AS ts, host, {group}failed, lat_bucket, events, latency_max FROM rollups"
             + (" WHERE " + " AND ".join(rollup_where) if rollup_where else "")]
    edges = []
    if spec.since_ns:
        edges.append(f"(ts >= {b.bind(spec.since_ns)} AND ts < {b.bind(first_full)})")
    if spec.until_ns:
        edges.append(f"(ts >= {b.bind(end_full)} AND ts < {b.bind(spec.until_ns)})")
    if edges:
        raw_where = [f"({' OR '.join(edges)})"] + dims
        parts.append(f"{raw_select} FROM events WHERE {' AND '.join(raw_where)}")
    return parts
