"""What a query asks (``QuerySpec``): the contract between ``dnstrace query``, the web view and the collector.

The spec travels as the gRPC ``QueryRequest``; the collector renders it as SQL
(``dnstrace.collector.query.sql``). Group keys and orderings are whitelists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dnstrace.errors import UsageError
from dnstrace.wire.codec import COLUMN_NAMES

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
    def from_request(cls, request: Any) -> QuerySpec:
        spec = cls()
        for name in cls.SCALAR_FIELDS:
            setattr(spec, name, getattr(request, name))
        for name in cls.LIST_FIELDS:
            setattr(spec, name, list(getattr(request, name)))
        return spec

    def to_request(self, message_type: Any) -> Any:
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
