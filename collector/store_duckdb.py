"""The embedded store: one DuckDB file, bulk inserts through Arrow, queries served in-process.

Only one process may open a DuckDB file, so the collector that writes it also
answers its queries. Each batch arrives as typed column lists, becomes one Arrow
table (650k rows/s measured here; ``executemany`` manages ~1k/s) and is inserted
together with its ``ingest_batches`` row in one transaction: a crash leaves either
both or neither, which is what makes replays exactly-once.
"""

from __future__ import annotations

import os
import threading

from dnstrace.collector.codec import COLUMNS, DecodedBatch
from dnstrace.collector.query import DuckDialect
from dnstrace.collector.store import BatchKey, Store
from dnstrace.errors import EnvironmentProblem

_SQL_TYPES = {"int": "BIGINT", "str": "VARCHAR", "bool": "BOOLEAN"}


class DuckDBStore(Store):
    kind = "duckdb"
    dialect = DuckDialect()

    def __init__(self, path: str, retention_ns: int = 0):
        super().__init__(retention_ns)
        self.path = path or ":memory:"
        self._local = threading.local()
        self._con = None

    def _create(self) -> None:
        import duckdb

        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.IOException as err:
            raise EnvironmentProblem(f"cannot open DuckDB store {self.path}: {str(err).splitlines()[0]}",
                                     hint="only one process may open a DuckDB file: is another collector "
                                          "or agent using it?") from None
        # Checkpoints recompress the table; at the 16 MB default they ran every few batches and halved
        # ingest throughput here. The WAL is replayed on restart, so a bigger threshold loses nothing.
        self._con.execute("SET checkpoint_threshold = '256MB'")
        columns = ["ts BIGINT NOT NULL", "host VARCHAR NOT NULL"] + [
            f"{name} {_SQL_TYPES[kind]}" + (" NOT NULL" if name == "kind" else "")
            for name, kind in COLUMNS if name != "ts"]
        self._con.execute(f"CREATE TABLE IF NOT EXISTS events ({', '.join(columns)})")
        self._con.execute("CREATE TABLE IF NOT EXISTS ingest_batches (host VARCHAR NOT NULL, boot_id VARCHAR NOT NULL,"
                          " instance UBIGINT NOT NULL, seq UBIGINT NOT NULL, events BIGINT, received_ns BIGINT)")

    def _load_watermarks(self) -> dict:
        rows = self._con.execute("SELECT host, boot_id, instance, max(seq) FROM ingest_batches "
                                 "GROUP BY host, boot_id, instance").fetchall()
        return {(h, b, int(i)): int(s) for h, b, i, s in rows}

    def _insert(self, key: BatchKey, batch: DecodedBatch) -> None:
        import time

        import pyarrow as pa

        arrow_types = {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
        table = pa.table({name: pa.array(batch.columns[name], type=arrow_types[kind]) for name, kind in COLUMNS})
        con = self._con
        select = ", ".join(["ts", "$host"] + [name for name, _ in COLUMNS if name != "ts"])
        con.register("incoming_batch", table)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                if batch.count:
                    con.execute(f"INSERT INTO events SELECT {select} FROM incoming_batch", {"host": key.host})
                con.execute("INSERT INTO ingest_batches VALUES (?, ?, ?, ?, ?, ?)",
                            [key.host, key.boot_id, key.instance, key.seq, batch.count, time.time_ns()])
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        finally:
            con.unregister("incoming_batch")

    def _cursor(self):
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._con.cursor()
        return cursor

    def _execute(self, sql: str, params: dict) -> list[tuple]:
        return self._cursor().execute(sql, params).fetchall()

    def _delete_before(self, cutoff_ns: int) -> None:
        self._con.execute("DELETE FROM events WHERE ts < ?", [cutoff_ns])
        self._con.execute("DELETE FROM ingest_batches WHERE received_ns < ?", [cutoff_ns])

    def count(self) -> int:
        return self._execute("SELECT count(*) FROM events", {})[0][0]

    def describe(self) -> str:
        import duckdb

        return f"duckdb {duckdb.__version__} ({self.path})"

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
