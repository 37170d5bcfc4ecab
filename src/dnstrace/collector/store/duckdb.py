"""The embedded store: one DuckDB file, bulk inserts through Arrow, queries served in-process.

Only one process may open a DuckDB file, so the collector that writes it also
answers its queries. Each batch arrives as typed Arrow arrays (built while decoding;
``executemany`` manages ~1k rows/s). The writer thread inserts a whole group of
batches (group commit, see ``store.Store``) as one Arrow table, plus their per-minute
``rollups`` rows (aggregated by DuckDB from the same table) and their
``ingest_batches`` rows, in one transaction: a crash leaves all or none, which is
what makes replays exactly-once. attrs JSON is validated here with ``json_valid``
(vectorized, without the GIL, over each batch's distinct attrs values); a batch with a
bad one is refused, the rest stored.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from dnstrace.collector.query import limits as query_limits
from dnstrace.collector.query import rollup
from dnstrace.collector.query.sql import DuckDialect
from dnstrace.collector.store.base import BatchKey, Store
from dnstrace.errors import EnvironmentProblem
from dnstrace.wire.codec import COLUMNS, BatchError, DecodedBatch
from dnstrace.wire.rollup import DIMENSIONS, MINUTE_NS

if TYPE_CHECKING:
    import duckdb

_SQL_TYPES = {"int": "BIGINT", "str": "VARCHAR", "bool": "BOOLEAN"}


class DuckDBStore(Store[DecodedBatch]):
    kind = "duckdb"
    dialect = DuckDialect()
    validates_attrs_json = True
    keeps_column_lists = False

    def __init__(self, path: str, retention_ns: int = 0) -> None:
        super().__init__(retention_ns)
        self.path = path or ":memory:"
        self._local = threading.local()
        self._connection: duckdb.DuckDBPyConnection | None = None

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            raise RuntimeError(f"DuckDB store {self.path} is not open")
        return self._connection

    def _create(self) -> None:
        import duckdb

        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self._connection = duckdb.connect(self.path)
        except duckdb.IOException as err:
            raise EnvironmentProblem(f"cannot open DuckDB store {self.path}: {str(err).splitlines()[0]}",
                                     hint="only one process may open a DuckDB file: is another collector "
                                          "or agent using it?") from None
        # Checkpoints recompress the table; at the 16 MB default they ran every few batches and halved
        # ingest throughput here. The WAL is replayed on restart, so a bigger threshold loses nothing.
        self._con.execute("SET checkpoint_threshold = '256MB'")
        # Rows are read back by ts, never by insertion order; without that constraint DuckDB appends a
        # group in parallel (1.5 -> 1.0 ms per 1k events here).
        self._con.execute("SET preserve_insertion_order = false")
        columns = ["ts BIGINT NOT NULL", "host VARCHAR NOT NULL"] + [
            f"{name} {_SQL_TYPES[kind]}" + (" NOT NULL" if name == "kind" else "")
            for name, kind in COLUMNS if name != "ts"]
        self._con.execute(f"CREATE TABLE IF NOT EXISTS events ({', '.join(columns)})")
        had_rollups = bool(self._con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'rollups'").fetchall()[0][0])
        dims = ", ".join(f"{d} VARCHAR" + (" NOT NULL" if d in ("host", "kind") else "") for d in DIMENSIONS)
        self._con.execute(f"CREATE TABLE IF NOT EXISTS rollups (minute BIGINT NOT NULL, {dims}, failed BOOLEAN, "
                          "lat_bucket INTEGER, events BIGINT NOT NULL, latency_max BIGINT)")
        if not had_rollups:
            self.rebuild_rollups_locked()  # a store written before rollups existed
        self._con.execute("CREATE TABLE IF NOT EXISTS ingest_batches (host VARCHAR NOT NULL, boot_id VARCHAR NOT NULL,"
                          " instance UBIGINT NOT NULL, seq UBIGINT NOT NULL, events BIGINT, received_ns BIGINT)")
        # The newest event of each batch: how far behind a host is (``Store.hosts_behind``).
        self._con.execute("ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS max_ts BIGINT")

    def _load_watermarks(self) -> dict[tuple[str, str, int], int]:
        rows = self._con.execute("SELECT host, boot_id, instance, max(seq) FROM ingest_batches "
                                 "GROUP BY host, boot_id, instance").fetchall()
        return {(h, b, int(i)): int(s) for h, b, i, s in rows}

    def _prepare(self, key: BatchKey, batch: DecodedBatch) -> DecodedBatch:
        return batch  # the writer concatenates the batches' Arrow tables

    def _write_group(self, batches: list[tuple[BatchKey, DecodedBatch]], laid_out: None = None) -> dict[int, BaseException]:
        import pyarrow as pa

        tables, attrs_numbers, attrs_values, agent_rollups = [], [], [], []
        for n, (key, batch) in enumerate(batches):
            if batch.rollup_count:
                plain = {name: a.dictionary_decode() if pa.types.is_dictionary(a.type) else a
                         for name, a in batch.rollup_arrays().items()}  # one type per column across batches
                agent_rollups.append((n, pa.table(plain).append_column(
                    "host", pa.repeat(pa.scalar(key.host, pa.string()), batch.rollup_count))))
            if not batch.count:
                continue
            table = batch.arrow_table()
            attrs = batch.arrays["attrs"]
            if attrs.null_count < len(attrs):
                # v2 attrs are dictionary-encoded: validating each distinct value is enough (codes were
                # range-checked at decode), and repeated attrs are common.
                distinct = attrs.dictionary if hasattr(attrs, "dictionary") else attrs
                attrs_values.append(distinct)
                attrs_numbers.append(pa.repeat(pa.scalar(n, pa.int32()), len(distinct)))
            # host from the envelope and the batch's index in the group, repeated in C (no per-row Python)
            tables.append(table.append_column("host", pa.repeat(pa.scalar(key.host, pa.string()), batch.count))
                          .append_column("batch_no", pa.repeat(pa.scalar(n, pa.int32()), batch.count)))
        refused: dict[int, BaseException] = {}
        con = self._con
        incoming = pa.concat_tables(tables) if tables else None
        if incoming is not None:
            con.register("incoming_group", incoming)
        try:
            if attrs_values:
                # attrs were shape-checked at decode ({...}); full JSON validity is checked here, vectorized.
                con.register("attrs_check", pa.table({"batch_no": pa.concat_arrays(attrs_numbers),
                                                      "attrs": pa.concat_arrays(attrs_values)}))
                bad = con.execute("SELECT DISTINCT batch_no FROM attrs_check "
                                  "WHERE attrs IS NOT NULL AND NOT json_valid(attrs)").fetchall()
                for (n,) in bad:
                    refused[n] = BatchError("'attrs' holds invalid JSON")
            # Filtering happens in a named subquery: every SQL engine accepts ``(SELECT ...) AS x``, while a
            # parenthesized bare table name was accepted by one DuckDB release only (2.0.0) and broke on 2.0.1.
            where = f" WHERE batch_no NOT IN ({', '.join(str(n) for n in refused)})" if refused else ""
            source = f"(SELECT * FROM incoming_group{where}) AS incoming"
            select = ", ".join(["ts", "host"] + [name for name, _ in COLUMNS if name != "ts"])
            now = time.time_ns()
            marks = [(k.host, k.boot_id, k.instance, k.seq, b.count, now, b.max_ts())
                     for n, (k, b) in enumerate(batches) if n not in refused]
            con.execute("BEGIN TRANSACTION")
            try:
                if incoming is not None and len(refused) < len(tables):
                    con.execute(f"INSERT INTO events SELECT {select} FROM {source}")
                    con.execute(f"INSERT INTO rollups {rollup.ingest_select(source, 'duckdb')}")
                kept = [table for n, table in agent_rollups if n not in refused]
                if kept:
                    con.register("agent_rollups", pa.concat_tables(kept))
                    try:
                        con.execute(f"INSERT INTO rollups SELECT minute, {', '.join(DIMENSIONS)}, failed, "
                                    "lat_bucket, events, latency_max FROM agent_rollups")
                    finally:
                        con.unregister("agent_rollups")
                if marks:
                    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(marks))
                    con.execute("INSERT INTO ingest_batches (host, boot_id, instance, seq, events, received_ns, max_ts) "
                                f"VALUES {values}", [v for m in marks for v in m])
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        finally:
            if incoming is not None:
                con.unregister("incoming_group")
            if attrs_values:
                con.unregister("attrs_check")
        return refused

    def rebuild_rollups(self) -> None:
        """Recompute every rollup row from the raw events (after a bulk load that bypassed ingest)."""
        with self._write_lock:
            self.rebuild_rollups_locked()

    def rebuild_rollups_locked(self) -> None:
        self._con.execute("BEGIN TRANSACTION")
        self._con.execute("DELETE FROM rollups")
        self._con.execute(f"INSERT INTO rollups {rollup.ingest_select('events', 'duckdb')}")
        self._con.execute("COMMIT")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._con.cursor()
        return cursor

    charges_rows = True
    _FETCH_ROWS = 10_000

    def _execute(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        cursor = self._cursor()
        control = query_limits.current()
        if control is None:
            return list(cursor.execute(sql, params).fetchall())
        import duckdb

        control.bind(cursor.interrupt)
        try:
            cursor.execute(sql, params)
            rows: list[tuple[Any, ...]] = []
            while True:
                chunk = cursor.fetchmany(self._FETCH_ROWS)
                control.charge(chunk)  # raises past the size bound, the deadline or a cancel
                rows.extend(chunk)
                if len(chunk) < self._FETCH_ROWS:
                    return rows
        except (duckdb.InterruptException, query_limits.QueryStopped) as err:
            control.unbind()
            self._local.cursor = None  # a fresh cursor for this thread's next query
            cursor.close()
            if isinstance(err, query_limits.QueryStopped):
                raise
            raise control.stop_reason() from None
        finally:
            control.unbind()

    def _delete_before(self, cutoff_ns: int) -> None:
        self._con.execute("DELETE FROM events WHERE ts < ?", [cutoff_ns])
        self._con.execute("DELETE FROM rollups WHERE minute + ? <= ?", [MINUTE_NS, cutoff_ns])
        self._con.execute("DELETE FROM ingest_batches WHERE received_ns < ?", [cutoff_ns])

    def count(self) -> int:
        return int(self._execute("SELECT count(*) FROM events", {})[0][0])

    def describe(self) -> str:
        import duckdb

        return f"duckdb {duckdb.__version__} ({self.path})"

    def close(self) -> None:
        self.stop_writer()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
