"""The query engine: filters, aggregations and findings, rendered as SQL for DuckDB or ClickHouse.

A ``QuerySpec`` says what the user asked (``dnstrace query`` flags or the gRPC
``QueryRequest``); ``build_sql(spec, dialect)`` turns it into one SQL statement with
bound parameters. Modes:

- ``events``: raw rows (most recent ``limit``, printed oldest first);
- ``top``: per group (comm, host, container, name, server, ...) count, failures,
  p50/p99/max latency and number of hosts, ordered by p99, count or failures;
- ``timeseries``: the same figures per time bucket (optionally per group);
- ``findings``: which rules fired on which hosts, first and last seen (fleet view).

User values never enter the SQL text: they are parameters; group keys and
orderings come from whitelists. ``plan_query`` answers ``top`` and ``timeseries``
from the per-minute rollups when they cover the spec (``collector.rollup``: exact
counts, failures, max and hosts; p50/p99 within 4.4%) and from raw events otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnstrace.collector.codec import COLUMN_NAMES
from dnstrace.errors import UsageError

MODES = ("events", "top", "timeseries", "findings")
DEFAULT_LIMIT = {"events": 1000, "top": 20, "timeseries": 10000, "findings": 100}
MAX_LIMIT = 1_000_000

# group key -> SQL expression over the events table
GROUP_KEYS = {
    "host": "host", "kind": "kind", "comm": "comm", "pid": "pid", "container": "container",
    "pod": "pod", "namespace": "namespace", "name": "coalesce(qname, name)", "qname": "coalesce(qname, name)",
    "server": "server", "rcode": "rcode", "error": "error", "reason": "reason", "rule": "rule",
    "daddr": "daddr", "qtype": "qtype",
}
ORDERS = ("p99", "count", "failures", "max")

# Event columns in the order rows are printed (agent field names; host after ts).
EVENT_SELECT = ("kind", "ts", "host", "pid", "tid", "comm", "container", "pod", "namespace") + tuple(
    c for c in COLUMN_NAMES if c not in ("kind", "ts", "pid", "tid", "comm", "container", "pod", "namespace"))


@dataclass
class QuerySpec:
    mode: str = "events"
    since_ns: int = 0
    until_ns: int = 0
    hosts: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    name_glob: str = ""
    servers: list[str] = field(default_factory=list)
    min_latency_ns: int = 0
    failed_only: bool = False
    rcodes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    limit: int = 0
    group_by: str = ""
    order_by: str = ""
    bucket_ns: int = 0

    LIST_FIELDS = ("hosts", "pids", "comms", "containers", "pods", "namespaces", "kinds", "servers", "rcodes",
                   "errors", "reasons", "rules")
    SCALAR_FIELDS = ("mode", "since_ns", "until_ns", "name_glob", "min_latency_ns", "failed_only", "limit",
                     "group_by", "order_by", "bucket_ns")

    @classmethod
    def from_request(cls, request) -> "QuerySpec":
        spec = cls()
        for name in cls.SCALAR_FIELDS:
            setattr(spec, name, getattr(request, name))
        for name in cls.LIST_FIELDS:
            setattr(spec, name, list(getattr(request, name)))
        return spec

    def to_request(self, message_type):
        request = message_type()
        for name in self.SCALAR_FIELDS:
            setattr(request, name, getattr(self, name))
        for name in self.LIST_FIELDS:
            getattr(request, name).extend(getattr(self, name))
        return request

    def validate(self) -> None:
        """Raise ``UsageError`` for anything the engine cannot answer."""
        if self.mode not in MODES:
            raise UsageError(f"unknown query mode {self.mode!r}", hint=f"one of {', '.join(MODES)}")
        if self.group_by and self.group_by not in GROUP_KEYS:
            raise UsageError(f"cannot group by {self.group_by!r}", hint=f"one of {', '.join(sorted(GROUP_KEYS))}")
        if self.order_by and self.order_by not in ORDERS:
            raise UsageError(f"cannot order by {self.order_by!r}", hint=f"one of {', '.join(ORDERS)}")
        if self.mode == "timeseries" and self.bucket_ns <= 0:
            raise UsageError("a time series needs a bucket width", hint="e.g. --bucket 1m")
        if not 0 <= self.limit <= MAX_LIMIT:
            raise UsageError(f"limit must be 0..{MAX_LIMIT}")
        if self.since_ns < 0 or self.until_ns < 0 or self.min_latency_ns < 0:
            raise UsageError("times and latencies must not be negative")
        for name, value in (("--since", self.since_ns), ("--until", self.until_ns),
                            ("--min-latency", self.min_latency_ns), ("--bucket", self.bucket_ns)):
            if value >= 2**63:
                raise UsageError(f"{name} is out of range (beyond the year 2262)")
        for pid in self.pids:
            if not 0 <= pid < 2**32:
                raise UsageError(f"--pid {pid} is out of range (0..{2**32 - 1})")
        if len(self.name_glob) > 1024:
            raise UsageError("name glob too long")


class Dialect:
    """SQL differences between the stores."""

    name = "generic"

    def param(self, key: str) -> str:
        raise NotImplementedError

    def quantile(self, expr: str, q: float) -> str:
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

    def param(self, key):
        return f"${key}"

    def quantile(self, expr, q):
        return f"quantile_cont({expr}, {q})"

    def like_escaped(self, expr, param):
        return f"{expr} LIKE {param} ESCAPE '\\'"

    def bucket(self, bucket_param):
        return f"(ts // {bucket_param}) * {bucket_param}"

    def sorted_distinct(self, expr):
        return f"list_sort(list(DISTINCT {expr}))"

    def is_true(self, expr):
        return expr


class ClickHouseDialect(Dialect):
    name = "clickhouse"

    def param(self, key):
        return f"%({key})s"

    def quantile(self, expr, q):
        return f"quantile({q})({expr})"

    def like_escaped(self, expr, param):
        return f"{expr} LIKE {param}"  # backslash is ClickHouse's LIKE escape

    def bucket(self, bucket_param):
        return f"intDiv(ts, {bucket_param}) * {bucket_param}"

    def sorted_distinct(self, expr):
        return f"arraySort(groupUniqArray({expr}))"

    def is_true(self, expr):
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
        self.params: dict = {}

    def bind(self, value) -> str:
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

    def figures(self) -> list[tuple[str, str]]:
        d = self.dialect
        return [
            ("count", "count(*)"),
            ("failures", f"sum(CASE WHEN {d.is_true('failed')} THEN 1 ELSE 0 END)"),
            ("p50_ns", d.quantile("latency_ns", 0.5)),
            ("p99_ns", d.quantile("latency_ns", 0.99)),
            ("max_ns", "max(latency_ns)"),
            ("hosts", "count(DISTINCT host)"),
        ]


def build_sql(spec: QuerySpec, dialect: Dialect, table: str = "events") -> tuple[str, dict, list[str]]:
    """(sql, params, column names of the result)."""
    spec.validate()
    b = _Builder(dialect)
    where = b.where(spec)
    limit = spec.limit or DEFAULT_LIMIT[spec.mode]
    if spec.mode == "events":
        columns = list(EVENT_SELECT)
        sql = f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY ts DESC LIMIT {int(limit)}"
        return sql, b.params, columns
    if spec.mode == "top":
        key = spec.group_by or "comm"
        figures = b.figures()
        order = {"p99": "p99_ns", "count": "count", "failures": "failures", "max": "max_ns"}[spec.order_by or "p99"]
        # The SQL alias is not the key's name: ClickHouse would resolve ``name`` inside coalesce(qname, name) to
        # an alias ``name`` of that very expression. Result columns are named by position.
        select = [f"{GROUP_KEYS[key]} AS group_{key}"] + [f"{expr} AS {alias}" for alias, expr in figures]
        columns = [key] + [alias for alias, _ in figures]
        sql = (f"SELECT {', '.join(select)} FROM {table}{where} GROUP BY {GROUP_KEYS[key]} "
               f"ORDER BY {order} DESC, count DESC LIMIT {int(limit)}")
        return sql, b.params, columns
    if spec.mode == "timeseries":
        bucket = dialect.bucket(b.bind(int(spec.bucket_ns)))
        figures = b.figures()
        select = [f"{bucket} AS bucket_ts"]
        columns = ["bucket_ts"]
        group = ["bucket_ts"]
        if spec.group_by:
            select.append(f"{GROUP_KEYS[spec.group_by]} AS group_{spec.group_by}")
            columns.append(spec.group_by)
            group.append(f"group_{spec.group_by}")
        select += [f"{expr} AS {alias}" for alias, expr in figures]
        columns += [alias for alias, _ in figures]
        sql = (f"SELECT {', '.join(select)} FROM {table}{where} GROUP BY {', '.join(group)} "
               f"ORDER BY {', '.join(group)} LIMIT {int(limit)}")
        return sql, b.params, columns
    # findings: the fleet view of rules
    finding_where = where + (" AND " if where else " WHERE ") + f"kind = {b.bind('finding')}"
    columns = ["rule", "severity", "count", "hosts", "host_list", "first_ts", "last_ts", "sample"]
    sql = (f"SELECT rule, max(severity) AS severity, count(*) AS count, count(DISTINCT host) AS hosts, "
           f"{dialect.sorted_distinct('host')} AS host_list, min(ts) AS first_ts, max(ts) AS last_ts, "
           f"min(attrs) AS sample FROM {table}{finding_where} GROUP BY rule "
           f"ORDER BY hosts DESC, count DESC LIMIT {int(limit)}")
    return sql, b.params, columns


def shape_rows(spec: QuerySpec, columns: list[str], raw_rows: list[tuple]) -> list[dict]:
    """Result tuples -> dicts; event rows get the agent's field names back (attrs merged)."""
    from dnstrace.collector.codec import row_to_event
    import json

    rows = [dict(zip(columns, r)) for r in raw_rows]
    if spec.mode == "events":
        rows.reverse()  # most recent N, printed oldest first
        return [row_to_event(r) for r in rows]
    for row in rows:
        for key in ("p50_ns", "p99_ns"):
            if row.get(key) is not None and row[key] == row[key]:  # NaN (ClickHouse, no values) -> None
                row[key] = int(row[key])
            elif key in row:
                row[key] = None
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
    """How a store answers a spec: one SQL statement, shaped by ``shape_rows`` or by a rollup answer."""

    sql: str
    params: dict
    columns: list[str]
    rollup: object = None  # a ``rollup.RollupAnswer`` when the SQL reads rollups
    hosts_sql: str = ""  # rollup plans: distinct hosts per group (same params)


def plan_query(spec: QuerySpec, dialect: Dialect, has_rollups: bool = True) -> Plan:
    """Rollups when they cover the spec (see ``collector.rollup``), raw events otherwise."""
    from dnstrace.collector import rollup

    spec.validate()
    if not (has_rollups and rollup.covered(spec)):
        sql, params, columns = build_sql(spec, dialect)
        return Plan(sql, params, columns)
    b = _Builder(dialect)
    minute = rollup.MINUTE_NS
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
    columns = ", ".join(rollup.DIMENSIONS)
    parts = [f"SELECT minute AS ts, {columns}, failed, lat_bucket, events, latency_max FROM rollups"
             + (" WHERE " + " AND ".join(rollup_where) if rollup_where else "")]
    edges = []
    if spec.since_ns:
        edges.append(f"(ts >= {b.bind(spec.since_ns)} AND ts < {b.bind(first_full)})")
    if spec.until_ns:
        edges.append(f"(ts >= {b.bind(end_full)} AND ts < {b.bind(spec.until_ns)})")
    if edges:
        if dialect.name == "clickhouse":
            one, bucket = "toUInt64(1)", rollup.bucket_sql("latency_ns", "clickhouse")
        else:
            one, bucket = "CAST(1 AS BIGINT)", rollup.bucket_sql("latency_ns", "duckdb")
        raw_where = [f"({' OR '.join(edges)})"] + dims
        parts.append(f"SELECT ts, {columns}, failed, {bucket} AS lat_bucket, {one} AS events, "
                     f"latency_ns AS latency_max FROM events WHERE {' AND '.join(raw_where)}")
    group_exprs, group_columns = [], []
    if spec.mode == "timeseries":
        group_exprs.append(f"{dialect.bucket(b.bind(int(spec.bucket_ns)))} AS bucket_ts")
        group_columns.append("bucket_ts")
    key = spec.group_by or ("comm" if spec.mode == "top" else "")
    if key:
        group_exprs.append(f"{key} AS {key}")
        group_columns.append(key)
    failures = f"sum(CASE WHEN {dialect.is_true('failed')} THEN events ELSE 0 END)"
    source = f"({' UNION ALL '.join(parts)}) AS u"
    select = group_exprs + ["lat_bucket", "sum(events)", failures, "max(latency_max)"]
    sql = f"SELECT {', '.join(select)} FROM {source} GROUP BY {', '.join(group_columns + ['lat_bucket'])}"
    # Distinct hosts do not add up over latency buckets: a second, coarser grouping of the same rows.
    hosts_sql = (f"SELECT {', '.join(group_exprs + ['count(DISTINCT host)'])} FROM {source}"
                 + (f" GROUP BY {', '.join(group_columns)}" if group_columns else ""))
    return Plan(sql, b.params, group_columns, rollup.RollupAnswer(spec, group_columns), hosts_sql)
