"""Open the store a URL names (``duckdb:PATH``, ``clickhouse://HOST:PORT/DB``), and check it works with the installed engine."""

from __future__ import annotations

import os
import time
from typing import Any

from dnstrace.collector.store.base import BatchKey, Store
from dnstrace.errors import UsageError
from dnstrace.wire.codec import decode_batch, encode_events
from dnstrace.wire.query import QuerySpec


def open_store(url: str, retention_ns: int = 0) -> Store[Any]:
    """``duckdb:PATH`` (``duckdb::memory:`` for tests) or ``clickhouse://HOST:PORT/DB``."""
    if url.startswith("duckdb:"):
        from dnstrace.collector.store.duckdb import DuckDBStore  # DuckDB and ClickHouse load only when used

        store: Store[Any] = DuckDBStore(url[len("duckdb:"):], retention_ns)
    elif url.startswith("clickhouse://"):
        from dnstrace.collector.store.clickhouse import ClickHouseStore

        store = ClickHouseStore(url, retention_ns)
    else:
        raise UsageError(f"unknown store {url!r}", hint="use duckdb:PATH or clickhouse://HOST:PORT/DB")
    store.open()
    return store


def self_test(url: str) -> str:
    """``dnstrace doctor``'s store check: catches SQL the installed engine version refuses. For DuckDB, one
    lookup goes through the normal ingest path of a throwaway in-memory store and is read back; a ClickHouse
    URL is opened (schema checked or created) and queried, without writing into the fleet's data.
    Returns what was tested; raises what failed."""
    embedded = url.startswith("duckdb:")
    store = open_store("duckdb::memory:" if embedded else url)
    try:
        now = time.time_ns()
        if not embedded:
            store.query(QuerySpec(since_ns=now - 60 * 10**9, until_ns=now, limit=1))
            return store.describe()
        host = f"doctor-self-test-{os.getpid()}-{now}"
        event = {"ts": now, "kind": "lookup", "pid": 1, "comm": "doctor", "name": "self.test.", "latency_ns": 1000}
        store.insert(BatchKey(host, "doctor", 1, 1), decode_batch(encode_events([event])))
        _, rows = store.query(QuerySpec(since_ns=now - 1, until_ns=now + 1, hosts=[host], kinds=["lookup"]))
        if len(rows) != 1:
            raise RuntimeError(f"wrote 1 event, read back {len(rows)}")
        return store.describe()
    finally:
        store.close()
