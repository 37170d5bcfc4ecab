"""The fleet store: ClickHouse over its native protocol (clickhouse-driver).

One MergeTree table, partitioned by day and ordered by (kind, host, ts) — the
incident queries filter on kind and time first, then host. Features are detected
from the server version so Debian's 18.16 and current releases both work:
LowCardinality strings from 19.0, TTL retention from 19.6 (older servers get a
periodic ``ALTER TABLE ... DELETE``). Each commit group (several batches, see
``store.Store``) is one insert block carrying every row's (boot_id, instance, seq)
key columns, so a batch is stored whole or not at all and the exactly-once
watermarks are rebuilt from the table itself on start. A materialized view turns
each inserted block into per-minute ``rollups`` rows (``collector.rollup``; a plain
MergeTree summed at query time, which every server version has).
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

from dnstrace.collector import rollup
from dnstrace.collector.codec import COLUMNS, DecodedBatch
from dnstrace.collector.query import ClickHouseDialect
from dnstrace.collector.store import BatchKey, Store
from dnstrace.errors import EnvironmentProblem, UsageError

_LOW_CARDINALITY = ("host", "kind", "comm", "container", "pod", "namespace", "rcode", "error", "reason",
                    "rule", "severity", "qtype")


class ClickHouseStore(Store):
    kind = "clickhouse"
    dialect = ClickHouseDialect()

    def __init__(self, url: str, retention_ns: int = 0):
        super().__init__(retention_ns)
        parsed = urlparse(url)
        if not parsed.hostname:
            raise UsageError(f"bad ClickHouse URL {url!r}", hint="clickhouse://HOST:PORT/DB")
        self.host = parsed.hostname
        self.port = parsed.port or 9000
        self.database = parsed.path.strip("/") or "dnstrace"
        if not self.database.replace("_", "").isalnum():
            raise UsageError(f"bad ClickHouse database name {self.database!r}")
        self.user = parsed.username or "default"
        self.password = parsed.password or ""
        self.version: tuple[int, int] = (0, 0)
        self._client = None
        self._insert_client = None
        # clickhouse-driver clients are not thread-safe: one query at a time per client.
        self._query_lock = threading.Lock()

    def _connect(self, database: str | None):
        from clickhouse_driver import Client

        return Client(self.host, port=self.port, user=self.user, password=self.password,
                      database=database or "default", settings={"use_numpy": False}, connect_timeout=5)

    def _create(self) -> None:
        from clickhouse_driver import errors as ch_errors

        try:
            bootstrap = self._connect(None)
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            info = bootstrap.connection.server_info
            self.version = (info.version_major, info.version_minor)
            bootstrap.disconnect()
        except (ch_errors.Error, OSError, EOFError) as err:
            raise EnvironmentProblem(f"cannot reach ClickHouse at {self.host}:{self.port}: {err}",
                                     hint="is clickhouse-server running and listening there?") from None
        self._client = self._connect(self.database)
        self._insert_client = self._connect(self.database)
        lowcard = self.version >= (19, 0)
        ch_types = {"int": "Int64", "str": "String", "bool": "UInt8"}
        defs = ["ts Int64", "host " + ("LowCardinality(String)" if lowcard else "String"),
                "kind " + ("LowCardinality(String)" if lowcard else "String")]
        for name, kind in COLUMNS:
            if name in ("ts", "kind"):
                continue
            base = ch_types[kind]
            if name == "failed":
                defs.append("failed UInt8")
                continue
            typ = f"Nullable({base})"
            if lowcard and name in _LOW_CARDINALITY:
                typ = f"LowCardinality(Nullable({base}))"
            defs.append(f"{name} {typ}")
        defs += ["boot_id String", "instance UInt64", "seq UInt64"]
        ttl = ""
        if self.version >= (19, 6) and self.retention_ns:
            ttl = f" TTL toDateTime(intDiv(ts, 1000000000)) + INTERVAL {int(self.retention_ns // 10**9)} SECOND"
        self._client.execute(
            f"CREATE TABLE IF NOT EXISTS events ({', '.join(defs)}) ENGINE = MergeTree() "
            f"PARTITION BY toYYYYMMDD(toDateTime(intDiv(ts, 1000000000))) ORDER BY (kind, host, ts){ttl}")
        self._ttl_native = bool(ttl)
        self._create_rollups(lowcard, ttl)

    def _create_rollups(self, lowcard: bool, ttl: str) -> None:
        """Rollups: a plain MergeTree fed by a materialized view on every events insert block."""
        existed = bool(self._client.execute("EXISTS TABLE rollups")[0][0])
        text = "LowCardinality(String)" if lowcard else "String"
        nullable = "LowCardinality(Nullable(String))" if lowcard else "Nullable(String)"
        dims = ", ".join(f"{d} {text if d in ('host', 'kind') else nullable}" for d in rollup.DIMENSIONS)
        self._client.execute(
            f"CREATE TABLE IF NOT EXISTS rollups (minute Int64, {dims}, failed UInt8, lat_bucket Nullable(Int32), "
            f"events UInt64, latency_max Nullable(Int64)) ENGINE = MergeTree() "
            f"PARTITION BY toYYYYMMDD(toDateTime(intDiv(minute, 1000000000))) ORDER BY (kind, minute)"
            + ttl.replace("intDiv(ts,", "intDiv(minute,"))
        self._client.execute(f"CREATE MATERIALIZED VIEW IF NOT EXISTS rollups_mv TO rollups AS "
                             f"{rollup.ingest_select('events', 'clickhouse')}")
        if not existed and self._client.execute("SELECT count() FROM events")[0][0]:
            self._client.execute(f"INSERT INTO rollups {rollup.ingest_select('events', 'clickhouse')}")

    def _load_watermarks(self) -> dict:
        rows = self._client.execute("SELECT host, boot_id, instance, max(seq) FROM events "
                                    "GROUP BY host, boot_id, instance")
        return {(h, b, int(i)): int(s) for h, b, i, s in rows}

    def _write_group(self, batches: list[tuple[BatchKey, DecodedBatch]]) -> dict[int, BaseException]:
        batches = [(k, b) for k, b in batches if b.count]
        if not batches:
            return {}
        names = ["ts", "host"] + [n for n, _ in COLUMNS if n != "ts"] + ["boot_id", "instance", "seq"]
        data = {name: [] for name in names}
        for key, batch in batches:
            n = batch.count
            for name in names:
                if name == "host":
                    data[name] += [key.host] * n
                elif name == "boot_id":
                    data[name] += [key.boot_id] * n
                elif name == "instance":
                    data[name] += [key.instance] * n
                elif name == "seq":
                    data[name] += [key.seq] * n
                elif name == "failed":
                    data[name] += [1 if v else 0 for v in batch.columns[name]]
                else:
                    data[name] += batch.columns[name]
        total = sum(b.count for _, b in batches)
        # One block for the whole group: stored whole or not at all, and the rollup view sees it once.
        self._insert_client.execute(f"INSERT INTO events ({', '.join(names)}) VALUES", [data[n] for n in names],
                                    columnar=True, types_check=False,
                                    settings={"max_insert_block_size": max(total, 1_048_576)})
        return {}

    def rebuild_rollups(self) -> None:
        """Recompute every rollup row from the raw events (after a bulk load that bypassed ingest)."""
        with self._query_lock:
            self._client.execute("TRUNCATE TABLE rollups")
            self._client.execute(f"INSERT INTO rollups {rollup.ingest_select('events', 'clickhouse')}")

    def _execute(self, sql: str, params: dict) -> list[tuple]:
        with self._query_lock:
            return self._client.execute(sql, params)

    def _delete_before(self, cutoff_ns: int) -> None:
        if self._ttl_native:
            return  # the table's TTL does it
        with self._query_lock:
            self._client.execute("ALTER TABLE events DELETE WHERE ts < %(cutoff)s", {"cutoff": cutoff_ns})
            self._client.execute("ALTER TABLE rollups DELETE WHERE minute + %(minute)s <= %(cutoff)s",
                                 {"cutoff": cutoff_ns, "minute": rollup.MINUTE_NS})

    def count(self) -> int:
        return self._execute("SELECT count() FROM events", {})[0][0]

    def describe(self) -> str:
        return f"clickhouse {self.version[0]}.{self.version[1]} ({self.host}:{self.port}/{self.database})"

    def close(self) -> None:
        self.stop_writer()
        for client in (self._client, self._insert_client):
            if client is not None:
                client.disconnect()
