"""The fleet store: ClickHouse, one server or a cluster, written in its Native format over HTTP.

Ingest: each commit group (several batches, see ``store.Store``) becomes ONE
``INSERT INTO ingest FORMAT Native`` over the HTTP interface, its block laid out from
the batches' Arrow arrays by ``collector.native`` (no per-value Python; 18.16 reads
Native like every later release). ``ingest`` is a ``Null`` table: materialized views
on it write, from that one block, the raw ``events`` (carrying each row's batch key
columns), the per-minute ``rollups`` of those events (``wire.rollup``), the
rollup rows agents ship in ``summary`` mode, and one ``ingest_batches`` row per batch.
Each batch's rows of that block are laid out when it arrives, in the collector's decode
threads (``_prepare``); the writer puts a group's rows in the events table's sort order
(``native.block``: the server then writes the part without sorting it) and sends the
block piece by piece. The server applies a block only once it has read all of it, so a
collector killed mid-insert leaves the whole group or nothing, and a group it left is
seen by the dedup check below.

Exactly-once across collector replicas: the dedup state is ``ingest_batches`` in
ClickHouse, not a collector's memory. Before writing a group the writer reads the
stored watermark (highest seq) of every agent instance in it from that table, so a
batch another replica stored is acknowledged as a duplicate here. Agents send an
instance's batches in order, to one replica at a time; the one window this leaves is
a replica that keeps writing an agent's queued group after the agent has given up on
it and resent the group elsewhere (a partition, not a crash): said in the README.

Cluster (``clickhouse://HOST:PORT/DB?cluster=NAME``): the nodes come from
``system.clusters``; on every node the collector creates ``*_local`` tables
(``ReplicatedMergeTree`` under ``/clickhouse/tables/{shard}/DB/...``, the node's
``{shard}``/``{replica}`` macros), the ``ingest_local`` Null table and its views,
and ``Distributed`` tables named as on one server (``events``, ``rollups``,
``ingest_batches``, ``ingest``) so queries and inserts read the same on any node.
Inserts are sharded by host (a batch lives on one shard whole) and synchronous
(``insert_distributed_sync``), with the replicated engine's block deduplication off:
two different groups can produce identical rollup blocks, which must both count.

Features are detected from the server version so Debian's 18.16 and current releases
both work: LowCardinality strings from 19.0, TTL retention from 19.6 (older servers
get a periodic ``ALTER TABLE ... DELETE``). URL parameters: ``http_port`` (default
8123), ``cluster``.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from dnstrace.collector.query import rollup
from dnstrace.collector.query.sql import ClickHouseDialect
from dnstrace.collector.store import native
from dnstrace.collector.store.base import BatchKey, Store
from dnstrace.errors import EnvironmentProblem, UsageError
from dnstrace.wire.codec import COLUMNS, BatchError, DecodedBatch
from dnstrace.wire.rollup import DIMENSIONS, MINUTE_NS

_LOW_CARDINALITY = ("host", "kind", "comm", "container", "pod", "namespace", "rcode", "error", "reason",
                    "rule", "severity", "qtype")
_BASE_TYPES = {"int": "Int64", "str": "String", "bool": "UInt8"}
KEY_COLUMNS = (("boot_id", "String"), ("instance", "UInt64"), ("seq", "UInt64"))
EVENTS_ORDER_BY = ("kind", "host", "ts")
# Ingest block columns after the event columns: an agent rollup row has r_events > 0 (its event count).
ROLLUP_ROW_COLUMNS = (("r_events", "UInt64"), ("r_bucket", "Nullable(Int32)"))


def ingest_columns() -> list[tuple[str, str]]:
    """(name, type) of the ingest block: ts, host, the event columns, the batch key, the rollup-row fields."""
    columns = [("ts", "Int64"), ("host", "String")]
    for name, kind in COLUMNS:
        if name == "ts":
            continue
        base = _BASE_TYPES[kind]
        columns.append((name, base if name in ("kind", "failed") else f"Nullable({base})"))
    return columns + list(KEY_COLUMNS) + list(ROLLUP_ROW_COLUMNS)


class ClickHouseStore(Store[native.Chunk]):
    kind = "clickhouse"
    dialect = ClickHouseDialect()
    keeps_column_lists = False
    lays_out_ahead = True

    def __init__(self, url: str, retention_ns: int = 0) -> None:
        super().__init__(retention_ns)
        parsed = urlparse(url)
        if not parsed.hostname:
            raise UsageError(f"bad ClickHouse URL {url!r}", hint="clickhouse://HOST:PORT/DB[?cluster=NAME&http_port=N]")
        self.host = parsed.hostname
        self.port = parsed.port or 9000
        self.database = parsed.path.strip("/") or "dnstrace"
        if not self.database.replace("_", "").isalnum():
            raise UsageError(f"bad ClickHouse database name {self.database!r}")
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(options) - {"http_port", "cluster"}
        if unknown:
            raise UsageError(f"unknown ClickHouse URL parameter {sorted(unknown)[0]!r}", hint="http_port, cluster")
        try:
            self.http_port = int(options.get("http_port", 8123))
        except ValueError:
            raise UsageError(f"http_port must be a number in {url!r}") from None
        self.cluster = options.get("cluster", "")
        if self.cluster and not self.cluster.replace("_", "").isalnum():
            raise UsageError(f"bad ClickHouse cluster name {self.cluster!r}")
        self.user = parsed.username or "default"
        self.password = parsed.password or ""
        self.version: tuple[int, int] = (0, 0)
        self._client: Any = None  # a clickhouse_driver.Client once open (the driver has no type information)
        self._ttl_native = False
        # clickhouse-driver clients are not thread-safe: one query at a time per client.
        self._query_lock = threading.Lock()
        # The writer's helpers for putting a group's columns in order (while it does, the server waits).
        self._layout_pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="clickhouse-layout")

    def _connect(self, database: str | None, host: str | None = None, port: int | None = None) -> Any:
        from clickhouse_driver import Client

        return Client(host or self.host, port=port or self.port, user=self.user, password=self.password,
                      database=database or "default", settings={"use_numpy": False}, connect_timeout=5)

    # --- schema -------------------------------------------------------------------------------------------------
    def _create(self) -> None:
        from clickhouse_driver import errors as ch_errors

        try:
            bootstrap = self._connect(None)
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            info = bootstrap.connection.server_info
            self.version = (info.version_major, info.version_minor)
            nodes = [(self.host, self.port)]
            if self.cluster:
                rows = bootstrap.execute("SELECT host_address, port FROM system.clusters WHERE cluster = %(c)s "
                                         "ORDER BY shard_num, replica_num", {"c": self.cluster})
                if not rows:
                    raise UsageError(f"ClickHouse at {self.host}:{self.port} has no cluster {self.cluster!r}",
                                     hint="define it under <remote_servers> in the server config")
                nodes = [(h, int(p)) for h, p in rows]
            bootstrap.disconnect()
        except (ch_errors.Error, OSError, EOFError) as err:
            raise EnvironmentProblem(f"cannot reach ClickHouse at {self.host}:{self.port}: {err}",
                                     hint="is clickhouse-server running and listening there?") from None
        self._check_http()
        ttl = ""
        if self.version >= (19, 6) and self.retention_ns:
            ttl = f" TTL toDateTime(intDiv(ts, 1000000000)) + INTERVAL {int(self.retention_ns // 10**9)} SECOND"
        self._ttl_native = bool(ttl)
        for host, port in nodes:
            try:
                client = self._connect(None, host, port)
                client.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
                client.disconnect()
                client = self._connect(self.database, host, port)
            except (ch_errors.Error, OSError, EOFError) as err:
                raise EnvironmentProblem(f"cannot reach ClickHouse node {host}:{port} of cluster {self.cluster}: "
                                         f"{err}") from None
            try:
                self._create_on(client, ttl)
            except ch_errors.Error as err:
                raise EnvironmentProblem(f"cannot create the dnstrace tables on {host}:{port}: "
                                         f"{str(err).splitlines()[0][:300]}",
                                         hint="a cluster needs ZooKeeper and the {shard}/{replica} macros"
                                         if self.cluster else "") from None
            finally:
                client.disconnect()
        self._client = self._connect(self.database)

    def _check_http(self) -> None:
        try:
            conn = http.client.HTTPConnection(self.host, self.http_port, timeout=5)
            conn.request("GET", "/ping")
            answer = conn.getresponse().read()
            conn.close()
        except OSError as err:
            raise EnvironmentProblem(f"cannot reach ClickHouse's HTTP interface at {self.host}:{self.http_port}: "
                                     f"{err}", hint="ingest writes Native blocks over HTTP: give its port as "
                                                    "clickhouse://HOST:PORT/DB?http_port=N (default 8123)") from None
        if not answer.startswith(b"Ok"):
            raise EnvironmentProblem(f"{self.host}:{self.http_port} is not ClickHouse's HTTP interface")

    def _engine(self, table: str) -> str:
        if not self.cluster:
            return "MergeTree()"
        return f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{self.database}/{table}', '{{replica}}')"

    def _create_on(self, client: Any, ttl: str) -> None:
        """Every table and view on one server (or one cluster node)."""
        local = "_local" if self.cluster else ""
        lowcard = self.version >= (19, 0)
        text = "LowCardinality(String)" if lowcard else "String"
        defs = []
        for name, ch_type in ingest_columns()[:-len(ROLLUP_ROW_COLUMNS)]:
            if lowcard and name in _LOW_CARDINALITY:
                ch_type = text if ch_type == "String" else f"LowCardinality({ch_type})"
            defs.append(f"{name} {ch_type}")
        existed = bool(client.execute(f"EXISTS TABLE events{local}")[0][0])
        client.execute(
            f"CREATE TABLE IF NOT EXISTS events{local} ({', '.join(defs)}) ENGINE = {self._engine('events')} "
            f"PARTITION BY toYYYYMMDD(toDateTime(intDiv(ts, 1000000000))) ORDER BY ({', '.join(EVENTS_ORDER_BY)}){ttl}")
        nullable = "LowCardinality(Nullable(String))" if lowcard else "Nullable(String)"
        dims = ", ".join(f"{d} {text if d in ('host', 'kind') else nullable}" for d in DIMENSIONS)
        had_rollups = bool(client.execute(f"EXISTS TABLE rollups{local}")[0][0])
        client.execute(
            f"CREATE TABLE IF NOT EXISTS rollups{local} (minute Int64, {dims}, failed UInt8, "
            f"lat_bucket Nullable(Int32), events UInt64, latency_max Nullable(Int64)) "
            f"ENGINE = {self._engine('rollups')} "
            f"PARTITION BY toYYYYMMDD(toDateTime(intDiv(minute, 1000000000))) ORDER BY (kind, minute)"
            + ttl.replace("intDiv(ts,", "intDiv(minute,"))
        had_batches = bool(client.execute(f"EXISTS TABLE ingest_batches{local}")[0][0])
        client.execute(f"CREATE TABLE IF NOT EXISTS ingest_batches{local} (host String, boot_id String, "
                       f"instance UInt64, seq UInt64, events UInt64, received_ns Int64, max_ts Int64) "
                       f"ENGINE = {self._engine('ingest_batches')} ORDER BY (host, boot_id, instance, seq)")
        # Before the ingest table, a view on events wrote rollups: the views below replace it.
        client.execute("DROP TABLE IF EXISTS rollups_mv")
        if existed and not had_rollups:
            client.execute(f"INSERT INTO rollups{local} {rollup.ingest_select(f'events{local}', 'clickhouse')}")
        if existed and not had_batches:
            client.execute(f"INSERT INTO ingest_batches{local} SELECT host, boot_id, instance, seq, count(), 0, max(ts) "
                           f"FROM events{local} GROUP BY host, boot_id, instance, seq")
        ingest = ", ".join(f"{n} {t}" for n, t in ingest_columns())
        client.execute(f"CREATE TABLE IF NOT EXISTS ingest{local} ({ingest}) ENGINE = Null")
        event_names = ", ".join(n for n, _ in ingest_columns()[:-len(ROLLUP_ROW_COLUMNS)])
        dims_plain = ", ".join(DIMENSIONS)
        views = {
            "ingest_events_mv": (f"events{local}", f"SELECT {event_names} FROM ingest{local} WHERE r_events = 0"),
            "ingest_rollups_mv": (f"rollups{local}", rollup.ingest_select(f"ingest{local}", "clickhouse",
                                                                          where="r_events = 0")),
            "ingest_agent_rollups_mv": (f"rollups{local}",
                                        f"SELECT ts AS minute, {dims_plain}, failed, r_bucket AS lat_bucket, "
                                        f"r_events AS events, latency_ns AS latency_max FROM ingest{local} "
                                        f"WHERE r_events > 0"),
            "ingest_batches_mv": (f"ingest_batches{local}",
                                  f"SELECT host, boot_id, instance, seq, sum(r_events = 0) AS events, "
                                  f"toInt64(toUInt64(now()) * 1000000000) AS received_ns, max(ts) AS max_ts FROM ingest{local} "
                                  f"GROUP BY host, boot_id, instance, seq"),
        }
        for view, (target, select) in views.items():
            client.execute(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {target} AS {select}")
        if self.cluster:
            self._wait_replicas_active(client)
            for table, shard_key in (("events", "rand()"), ("rollups", "rand()"), ("ingest_batches", "rand()"),
                                     ("ingest", "cityHash64(host)")):
                client.execute(f"CREATE TABLE IF NOT EXISTS {table} AS {table}_local ENGINE = "
                               f"Distributed({self.cluster}, {self.database}, {table}_local, {shard_key})")

    def _wait_replicas_active(self, client: Any, timeout_s: float = 60.0) -> None:
        """A new replicated table registers with ZooKeeper in the background; writes before that fail."""
        deadline = time.monotonic() + timeout_s
        while True:
            waiting = client.execute("SELECT table FROM system.replicas WHERE database = %(db)s "
                                     "AND (is_readonly OR active_replicas = 0)", {"db": self.database})
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise EnvironmentProblem(f"replicated tables {', '.join(t for (t,) in waiting)} are not active",
                                         hint="is ZooKeeper reachable from every ClickHouse node, and "
                                              "interserver_http_port set in their config? (server.err.log says)")
            time.sleep(0.2)

    # --- exactly-once ------------------------------------------------------------------------------------------
    def _load_watermarks(self) -> dict[tuple[str, str, int], int]:
        rows = self._execute("SELECT host, boot_id, instance, max(seq) FROM ingest_batches "
                             "GROUP BY host, boot_id, instance", {})
        return {(h, b, int(i)): int(s) for h, b, i, s in rows}

    def _sync_watermarks(self, idents: set[tuple[str, str, int]]) -> None:
        """Read the stored watermarks of these agent instances (another replica may have stored their batches)."""
        if not idents:
            return
        rows = self._execute("SELECT host, boot_id, instance, max(seq) FROM ingest_batches "
                             "WHERE host IN %(hosts)s AND boot_id IN %(boots)s GROUP BY host, boot_id, instance",
                             {"hosts": tuple({i[0] for i in idents}), "boots": tuple({i[1] for i in idents})})
        for h, b, i, seq in rows:
            ident = (h, b, int(i))
            if ident in idents and int(seq) > self._watermarks.get(ident, 0):
                self._watermarks[ident] = int(seq)

    # --- ingest ------------------------------------------------------------------------------------------------
    def _prepare(self, key: BatchKey, batch: DecodedBatch) -> native.Chunk:
        """The batch's rows of the ingest block, laid out in the decode thread: its events, then its agent rollup rows.

        The writer then only orders the group's rows and strings them together (``native.block``).
        """
        import pyarrow as pa

        columns = _INGEST_COLUMNS
        null_types = {"Nullable(String)": pa.string(), "Nullable(Int64)": pa.int64(), "Nullable(Int32)": pa.int32()}
        keys = {"host": key.host, "boot_id": key.boot_id, "instance": key.instance, "seq": key.seq}
        chunk = native.Chunk(columns, {index: keys[name] for index, (name, _) in enumerate(columns) if name in keys})
        try:
            for part, count in ((batch.arrays, batch.count), (batch.rollup_arrays(), batch.rollup_count)):
                if not count:
                    continue
                events = part is batch.arrays
                for index, (name, ch_type) in enumerate(columns):
                    if index in chunk.constants:
                        continue
                    if name == "r_events" and events:
                        array = pa.repeat(pa.scalar(0, pa.uint64()), count)
                    else:
                        source = name if events else _ROLLUP_SOURCE.get(name, name)
                        array = part[source] if source in part else pa.nulls(count, null_types[ch_type])
                    chunk.add(index, array, sort_key=index in _ORDER_BY)
                chunk.rows += count
        except ValueError as err:  # a value the column type cannot hold (e.g. NULL where NULL is not allowed)
            raise BatchError(str(err)) from None
        return chunk

    def _layout(self, batches: list[native.Chunk]) -> list[native.Piece] | None:
        """One block, in the events table's sort order: the part is written without sorting (a third of the
        server's insert CPU), and a block is applied whole or not at all with its batches' ingest_batches rows."""
        chunks = [chunk for chunk in batches if chunk.rows]
        return native.block(chunks, _ORDER_BY, self._layout_pool.map) if chunks else None

    def _write_group(self, batches: list[tuple[BatchKey, native.Chunk]],
                     laid_out: list[native.Piece] | None = None) -> dict[int, BaseException]:
        pieces = laid_out if laid_out is not None else self._layout([chunk for _, chunk in batches])
        if pieces is None:
            return {}
        settings = {"insert_deduplicate": 0}
        if self.cluster:
            settings["insert_distributed_sync"] = 1
        self._http_insert("INSERT INTO ingest FORMAT Native", pieces, settings)
        return {}

    def _http_insert(self, query: str, pieces: list[native.Piece], settings: dict[str, Any]) -> None:
        """One INSERT over the HTTP interface, its body sent piece by piece (nothing is joined or copied here);
        raises with the server's message when it refuses."""
        params = urlencode(dict(settings, query=query, database=self.database, user=self.user,
                                password=self.password))
        conn = http.client.HTTPConnection(self.host, self.http_port, timeout=300)
        try:
            conn.request("POST", f"/?{params}", body=iter(pieces),
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(sum(len(p) for p in pieces))})
            response = conn.getresponse()
            status, answer = response.status, response.read()
        except (OSError, http.client.HTTPException) as err:
            raise EnvironmentProblem(f"ClickHouse insert over HTTP failed: {err}") from None
        finally:
            conn.close()
        if status != 200:
            raise RuntimeError(f"ClickHouse refused the insert: {answer.decode(errors='replace')[:500]}")

    # --- queries and upkeep -----------------------------------------------------------------------------------
    def rebuild_rollups(self) -> None:
        """Recompute every rollup row from the raw events (after a bulk load that bypassed ingest)."""
        with self._query_lock:
            self._on_every_table("TRUNCATE TABLE {rollups}")
            self._client.execute(f"INSERT INTO rollups {rollup.ingest_select('events', 'clickhouse')}",
                                 settings={"insert_distributed_sync": 1} if self.cluster else None)

    def truncate(self) -> None:
        """Forget everything stored (tests and benchmarks reuse one server)."""
        with self._query_lock:
            for table in ("events", "rollups", "ingest_batches"):
                self._on_every_table(f"TRUNCATE TABLE {{{table}}}")
        self._watermarks.clear()

    def _on_every_table(self, sql: str) -> None:
        """Run ``sql`` (with ``{events}``-style names) against the local tables of every node."""
        if not self.cluster:
            self._client.execute(sql.format(events="events", rollups="rollups", ingest_batches="ingest_batches"))
            return
        for host, port in self._client.execute("SELECT host_address, port FROM system.clusters "
                                               "WHERE cluster = %(c)s", {"c": self.cluster}):
            client = self._connect(self.database, host, int(port))
            try:
                client.execute(sql.format(events="events_local", rollups="rollups_local",
                                          ingest_batches="ingest_batches_local"))
            finally:
                client.disconnect()

    def _execute(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._query_lock:
            return list(self._client.execute(sql, params))

    def _delete_before(self, cutoff_ns: int) -> None:
        with self._query_lock:
            if not self._ttl_native:  # else the tables' TTL does it
                self._on_every_table(f"ALTER TABLE {{events}} DELETE WHERE ts < {int(cutoff_ns)}")
                self._on_every_table(f"ALTER TABLE {{rollups}} DELETE WHERE minute + {MINUTE_NS} <= "
                                     f"{int(cutoff_ns)}")
            # dedup keys age out with the events (the table has no TTL)
            self._on_every_table(f"ALTER TABLE {{ingest_batches}} DELETE WHERE received_ns < {int(cutoff_ns)}")

    def count(self) -> int:
        return int(self._execute("SELECT count() FROM events", {})[0][0])

    def describe(self) -> str:
        where = f"cluster {self.cluster} via " if self.cluster else ""
        return f"clickhouse {self.version[0]}.{self.version[1]} ({where}{self.host}:{self.port}/{self.database})"

    def close(self) -> None:
        self.stop_writer()
        self._layout_pool.shutdown()
        if self._client is not None:
            self._client.disconnect()


# Agent rollup rows in the ingest block: ingest column -> rollup row column (same name otherwise).
_ROLLUP_SOURCE = {"ts": "minute", "latency_ns": "latency_max", "r_events": "events", "r_bucket": "lat_bucket"}
_INGEST_COLUMNS = ingest_columns()
# The events table's ORDER BY, as ingest column indices: blocks are sent in this order (see collector.native).
_ORDER_BY = tuple(next(i for i, (n, _) in enumerate(_INGEST_COLUMNS) if n == name) for name in EVENTS_ORDER_BY)


