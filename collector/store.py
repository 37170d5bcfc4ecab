"""What every event store does: exactly-once batch inserts, queries, retention.

A batch is identified by ``BatchKey`` (host, boot id, agent instance, sequence
number). Agents send an instance's batches in order, so the store keeps the highest
stored ``seq`` per (host, boot, instance) as a watermark: a batch at or below it is a
replay and is acknowledged without storing anything again. Each backend stores a
batch's events and its watermark atomically (DuckDB: one transaction; ClickHouse:
one insert block carrying the key columns), and rebuilds watermarks on start.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from dnstrace.collector.codec import DecodedBatch
from dnstrace.collector.query import QuerySpec, build_sql, shape_rows
from dnstrace.errors import UsageError


@dataclass(frozen=True)
class BatchKey:
    host: str
    boot_id: str
    instance: int
    seq: int


class Store:
    """Base class: subclasses implement ``_insert``, ``_load_watermarks``, ``_execute``, ``_delete_before``."""

    kind = "store"

    def __init__(self, retention_ns: int = 0):
        self.retention_ns = retention_ns
        self._write_lock = threading.Lock()
        self._watermarks: dict[tuple[str, str, int], int] = {}
        self.counters = {"batches_stored": 0, "batches_duplicate": 0, "events_stored": 0,
                         "retention_runs": 0, "queries": 0}

    def open(self) -> None:
        self._create()
        self._watermarks = self._load_watermarks()

    # --- ingest -----------------------------------------------------------
    def insert(self, key: BatchKey, batch: DecodedBatch) -> bool:
        """Store the batch unless it was stored before; True when stored now."""
        ident = (key.host, key.boot_id, key.instance)
        with self._write_lock:
            if key.seq <= self._watermarks.get(ident, 0):
                self.counters["batches_duplicate"] += 1
                return False
            self._insert(key, batch)
            self._watermarks[ident] = key.seq
            self.counters["batches_stored"] += 1
            self.counters["events_stored"] += batch.count
            return True

    # --- queries ----------------------------------------------------------
    def query(self, spec: QuerySpec) -> tuple[list[str], list[dict]]:
        sql, params, columns = build_sql(spec, self.dialect)
        raw = self._execute(sql, params)
        self.counters["queries"] += 1
        rows = shape_rows(spec, columns, raw)
        if spec.mode == "events":
            columns = [c for c in columns if c not in ("failed", "attrs")]
        elif rows:
            columns = list(rows[0].keys())
        return columns, rows

    # --- retention --------------------------------------------------------
    def apply_retention(self, now_ns: int | None = None) -> None:
        if not self.retention_ns:
            return
        cutoff = (now_ns or time.time_ns()) - self.retention_ns
        with self._write_lock:
            self._delete_before(cutoff)
        self.counters["retention_runs"] += 1

    def stats(self) -> dict:
        return dict(self.counters, watermarks=len(self._watermarks))

    def describe(self) -> str:
        return self.kind

    def close(self) -> None:
        pass

    # --- backend ----------------------------------------------------------
    dialect = None

    def _create(self) -> None:
        raise NotImplementedError

    def _load_watermarks(self) -> dict:
        raise NotImplementedError

    def _insert(self, key: BatchKey, batch: DecodedBatch) -> None:
        raise NotImplementedError

    def _execute(self, sql: str, params: dict) -> list[tuple]:
        raise NotImplementedError

    def _delete_before(self, cutoff_ns: int) -> None:
        raise NotImplementedError


def open_store(url: str, retention_ns: int = 0) -> Store:
    """``duckdb:PATH`` (``duckdb::memory:`` for tests) or ``clickhouse://HOST:PORT/DB``."""
    if url.startswith("duckdb:"):
        from dnstrace.collector.store_duckdb import DuckDBStore

        store: Store = DuckDBStore(url[len("duckdb:"):], retention_ns)
    elif url.startswith("clickhouse://"):
        from dnstrace.collector.store_clickhouse import ClickHouseStore

        store = ClickHouseStore(url, retention_ns)
    else:
        raise UsageError(f"unknown store {url!r}", hint="use duckdb:PATH or clickhouse://HOST:PORT/DB")
    store.open()
    return store
