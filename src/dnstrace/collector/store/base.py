"""What every event store does: exactly-once batch inserts, queries, retention.

A batch is identified by ``BatchKey`` (host, boot id, agent instance, sequence
number). Agents send an instance's batches in order, so the store keeps the highest
stored ``seq`` per (host, boot, instance) as a watermark: a batch at or below it is a
replay and is acknowledged without storing anything again. Each backend stores a
batch's events, its per-minute rollup rows and its watermark atomically (DuckDB: one
transaction; ClickHouse: one insert block carrying the key columns), and rebuilds
watermarks on start. A store several collectors share (ClickHouse behind replicas)
reads the current watermarks of a group's agent instances before writing it
(``_sync_watermarks``), so a batch another replica stored counts as a replay. Writes go
through one writer thread that commits whatever has
queued up as one group (see ``Store``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dnstrace.collector.query import limits as query_limits
from dnstrace.collector.query.limits import QueryControl
from dnstrace.collector.query.sql import Dialect, plan_query, shape_rows
from dnstrace.wire.codec import DecodedBatch
from dnstrace.wire.query import QuerySpec

# What a backend's writer takes for one batch: its ``_prepare`` turns the decoded batch into it.
Prepared = TypeVar("Prepared")


@dataclass(frozen=True)
class BatchKey:
    host: str
    boot_id: str
    instance: int
    seq: int


class _Pending(Generic[Prepared]):
    """One batch waiting for the writer: resolved with True (stored), False (duplicate) or an exception.

    Resolving lets go of the batch: a stream holds its pending acks, not their events.
    """

    __slots__ = ("key", "batch", "count", "done", "result", "error", "_callbacks", "_callback_lock")

    def __init__(self, key: BatchKey, batch: Prepared, count: int):
        self.key = key
        self.batch: Prepared | None = batch
        self.count = count
        self.done = threading.Event()
        self.result = False
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[_Pending[Prepared]], object]] = []
        self._callback_lock = threading.Lock()

    def unwritten(self) -> Prepared:
        """The batch, while it waits to be written (``resolve`` lets go of it)."""
        if self.batch is None:
            raise RuntimeError("this batch was already resolved")
        return self.batch

    def resolve(self, result: bool = False, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.batch = None
        with self._callback_lock:
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def add_done_callback(self, callback: Callable[[_Pending[Prepared]], object]) -> None:
        """Call ``callback(self)`` once resolved (at once if it already is), in the resolving thread."""
        with self._callback_lock:
            if not self.done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def wait(self) -> bool:
        """True when stored now, False for a duplicate; raises what the write raised."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class Store(Generic[Prepared]):
    """Base class: subclasses implement ``_prepare``, ``_write_group``, ``_load_watermarks``, ``_execute``,
    ``_delete_before``.

    Group commit: ``submit`` queues a decoded batch for one writer thread, which takes
    everything queued (up to ``GROUP_MAX_EVENTS``) and writes it as one transaction
    together with the batches' watermark rows; each batch's ``_Pending`` resolves only
    after that commit, so an ack always means "durably stored". If a group fails, its
    batches are retried one by one so one bad batch cannot fail the others. After a
    batch of an instance fails, later batches of that instance are failed too until the
    agent resends the failed one: storing seq N+1 without N would make N look like a
    replay (the watermark would be past it). ``_prepare`` runs in the submitting thread
    (the collector's decode pool), so what a backend can do per batch before the write
    (ClickHouse: laying out its Native columns) overlaps the writer's commit. A backend
    whose write also has a costly part for the whole group that decides nothing
    (``_layout``: ClickHouse's sorted block) sets ``lays_out_ahead``: while a group is
    being written, the next one is taken (when a good group is already queued) and laid out
    beside it, so the server is not left waiting for the collector between inserts. Which
    batches get written is still decided group by group after the previous commit; a
    layout made for batches that then turn out not all fresh is dropped.
    """

    kind = "store"
    GROUP_MAX_EVENTS = 500_000
    # DuckDB writes a transaction of >= one row group (122,880 rows) straight to the data file instead of
    # the WAL (~40% cheaper per event), and spreads it over its threads one row group each, so two row
    # groups also use both cores here (write 1.9 -> 1.5 us CPU and 1.3 -> 0.66 us wall per event, measured).
    # The writer waits a little for that much while batches keep arriving.
    GROUP_GOOD_EVENTS = 2 * 122_880
    GROUP_LINGER_S = 0.1
    # Decoded events held (queued plus the group being written): submitters block beyond this, which is
    # backpressure to the streams and the bound on the collector's memory.
    HELD_MAX_EVENTS = 1_000_000
    lays_out_ahead = False  # True: ``_layout`` of the next group runs while the current one is written
    validates_attrs_json = False  # True: the backend checks attrs JSON at insert (decode skips it)
    keeps_column_lists = True  # False: the backend reads only ``DecodedBatch.arrays``

    def __init__(self, retention_ns: int = 0):
        self.retention_ns = retention_ns
        self._write_lock = threading.Lock()  # the writer's transaction vs retention deletes
        self._watermarks: dict[tuple[str, str, int], int] = {}
        self._poisoned: dict[tuple[str, str, int], int] = {}
        self._queue: deque[_Pending[Prepared]] = deque()
        self._queued_events = 0
        self._held_events = 0  # queued + being written
        self._queue_cond = threading.Condition()
        self._writer: threading.Thread | None = None
        self._ahead: ThreadPoolExecutor | None = None
        self._closing = False
        self.counters = {"batches_stored": 0, "batches_duplicate": 0, "batches_refused": 0, "events_stored": 0,
                         "commits": 0, "group_retries": 0, "submit_waits": 0, "layouts_ahead": 0,
                         "layouts_dropped": 0, "retention_runs": 0,
                         "queries": 0, "queries_rollup": 0, "queries_raw": 0}

    def open(self) -> None:
        self._create()
        self._watermarks = self._load_watermarks()
        if self.lays_out_ahead:
            self._ahead = ThreadPoolExecutor(1, thread_name_prefix=f"{self.kind}-layout-ahead")
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.kind}-writer", daemon=True)
        self._writer.start()

    # --- ingest -----------------------------------------------------------
    def insert(self, key: BatchKey, batch: DecodedBatch) -> bool:
        """Store the batch unless it was stored before; True when stored now (waits for the commit)."""
        return self.submit(key, batch).wait()

    def submit(self, key: BatchKey, batch: DecodedBatch) -> _Pending[Prepared]:
        """Queue the batch for the writer; the caller waits on the returned ``_Pending`` when it needs the result."""
        if not self.keeps_column_lists:
            batch.drop_lists()  # the Arrow arrays are all the backend reads: free the Python objects now
        pending = _Pending(key, self._prepare(key, batch), batch.count)
        with self._queue_cond:
            if self._closing:
                raise RuntimeError("store is closed")
            if self._held_events + batch.count > self.HELD_MAX_EVENTS and self._queue:
                self.counters["submit_waits"] += 1
                while self._held_events + batch.count > self.HELD_MAX_EVENTS and self._queue \
                        and not self._closing:
                    self._queue_cond.wait(0.5)
            self._queue.append(pending)
            self._queued_events += batch.count
            self._held_events += batch.count
            self._queue_cond.notify_all()
        return pending

    def _take_group(self, only_if_good: bool = False) -> list[_Pending[Prepared]]:
        """The next group: waits for a first batch, then lingers a little for a good group
        (``only_if_good``: no waiting; empty unless ``GROUP_GOOD_EVENTS`` are queued)."""
        with self._queue_cond:
            if only_if_good and self._queued_events < self.GROUP_GOOD_EVENTS:
                return []
            while not self._queue and not self._closing:
                self._queue_cond.wait(0.5)
            deadline = time.monotonic() + self.GROUP_LINGER_S
            while not self._closing and self._queued_events < self.GROUP_GOOD_EVENTS:
                before = len(self._queue)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._queue_cond.wait(min(remaining, 0.02))
                if len(self._queue) == before:
                    break  # nothing more is arriving: write what there is
            group: list[_Pending[Prepared]] = []
            events = 0
            while self._queue and (not group or events + self._queue[0].count <= self.GROUP_MAX_EVENTS):
                item = self._queue.popleft()
                group.append(item)
                events += item.count
            self._queued_events -= events
            self._queue_cond.notify_all()
            return group

    def _write_loop(self) -> None:
        ahead: tuple[list[_Pending[Prepared]], Future[Any]] | None = None
        while True:
            layout: Future[Any] | None = None
            if ahead is not None:
                (group, layout), ahead = ahead, None
            else:
                group = self._take_group()
            if not group:
                if self._closing:
                    return
                continue
            if self._ahead is not None:
                upcoming = self._take_group(only_if_good=True)
                if upcoming:
                    ahead = (upcoming, self._ahead.submit(self._layout, [item.unwritten() for item in upcoming]))
            try:
                self._write_group_safely(group, layout)
            except BaseException as err:  # never leave a submitter waiting forever
                for item in group:
                    if not item.done.is_set():
                        item.resolve(error=err)
            finally:
                with self._queue_cond:
                    self._held_events -= sum(item.count for item in group)
                    self._queue_cond.notify_all()

    def _write_group_safely(self, group: list[_Pending[Prepared]], layout: Future[Any] | None = None) -> None:
        """Write the fresh batches of ``group`` (``layout``: their ``_layout``, made ahead for all of ``group``)."""
        self._sync_watermarks({(i.key.host, i.key.boot_id, i.key.instance) for i in group})
        fresh: list[_Pending[Prepared]] = []
        planned: dict[tuple[str, str, int], int] = {}
        for item in group:
            key = item.key
            ident = (key.host, key.boot_id, key.instance)
            poisoned_at = self._poisoned.get(ident)
            if poisoned_at is not None:
                if key.seq > poisoned_at:
                    item.resolve(error=RuntimeError(f"an earlier batch (seq {poisoned_at}) of this agent failed"))
                    continue
                del self._poisoned[ident]  # the failed batch is being resent
            if key.seq <= planned.get(ident, self._watermarks.get(ident, 0)):
                self.counters["batches_duplicate"] += 1
                item.resolve(False)
                continue
            planned[ident] = key.seq
            fresh.append(item)
        if not fresh:
            return
        laid_out = None
        if layout is not None:
            if len(fresh) == len(group) and layout.exception() is None:
                laid_out = layout.result()
                self.counters["layouts_ahead"] += 1
            else:  # some were duplicates (or the layout failed): lay out the fresh ones in the write
                self.counters["layouts_dropped"] += 1
        refused: dict[int, BaseException] = {}
        try:
            with self._write_lock:
                refused = self._write_group([(i.key, i.unwritten()) for i in fresh], laid_out)
            self._committed([item for n, item in enumerate(fresh) if n not in refused])
            for n, err in refused.items():
                self.counters["batches_refused"] += 1
                fresh[n].resolve(error=err)
            return
        except Exception:
            if len(fresh) == 1:
                item = fresh[0]
                self._poison(item)
                raise
        self.counters["group_retries"] += 1
        for item in fresh:
            ident = (item.key.host, item.key.boot_id, item.key.instance)
            if ident in self._poisoned:
                item.resolve(error=RuntimeError(f"an earlier batch (seq {self._poisoned[ident]}) of this agent failed"))
                continue
            try:
                # A failed group may have stored some of its batches (ClickHouse: whole blocks): ask again.
                self._sync_watermarks({ident})
                if item.key.seq <= self._watermarks.get(ident, 0):
                    self.counters["batches_duplicate"] += 1
                    item.resolve(False)
                    continue
                with self._write_lock:
                    refused = self._write_group([(item.key, item.unwritten())], None)
            except Exception as err:
                self._poison(item)
                item.resolve(error=err)
                continue
            if refused:
                self.counters["batches_refused"] += 1
                item.resolve(error=refused[0])
            else:
                self._committed([item])

    def _poison(self, item: _Pending[Prepared]) -> None:
        self._poisoned[(item.key.host, item.key.boot_id, item.key.instance)] = item.key.seq

    def _committed(self, items: list[_Pending[Prepared]]) -> None:
        self.counters["commits"] += 1
        for item in items:
            key = item.key
            ident = (key.host, key.boot_id, key.instance)
            self._watermarks[ident] = max(key.seq, self._watermarks.get(ident, 0))
            self.counters["batches_stored"] += 1
            self.counters["events_stored"] += item.count
            item.resolve(True)

    # --- queries ----------------------------------------------------------
    def query(self, spec: QuerySpec, control: QueryControl | None = None) -> tuple[list[str], list[dict[str, Any]]]:
        """Run one query; with ``control`` it is interruptible and its result bounded (see query_limits)."""
        query_limits.set_current(control)
        try:
            columns, rows = self._query(spec)
        finally:
            query_limits.set_current(None)
        if control is not None and not self.charges_rows:
            control.charge([tuple(row.values()) for row in rows])  # after the fact: the backend fetched it all
        return columns, rows

    charges_rows = False  # True: the backend's ``_execute`` charges rows to the current control as it fetches

    def _query(self, spec: QuerySpec) -> tuple[list[str], list[dict[str, Any]]]:
        plan = plan_query(spec, self.dialect, self.has_rollups)
        raw = self._execute(plan.sql, plan.params)
        hosts = self._execute(plan.hosts_sql, plan.params) if plan.histogram is not None else []
        self.counters["queries"] += 1
        self.counters["queries_rollup" if plan.reads_rollups else "queries_raw"] += 1
        if plan.histogram is not None:
            return plan.histogram.finish(raw, hosts)
        columns = plan.columns
        rows = shape_rows(spec, columns, raw)
        if spec.mode == "events":
            columns = [c for c in columns if c not in ("failed", "attrs")]
        elif rows:
            columns = list(rows[0].keys())
        return columns, rows

    has_rollups = True

    # --- retention --------------------------------------------------------
    def apply_retention(self, now_ns: int | None = None) -> None:
        if not self.retention_ns:
            return
        cutoff = (now_ns or time.time_ns()) - self.retention_ns
        with self._write_lock:
            self._delete_before(cutoff)
        self.counters["retention_runs"] += 1

    def stats(self) -> dict[str, Any]:
        """Counters and queue depth; ``hosts_behind`` (one store query) for ``dnstrace query``'s completeness note."""
        with self._queue_cond:
            queued = (len(self._queue), self._queued_events)
        try:
            behind = self.hosts_behind()
            extra = {"hosts_behind": behind[:50], "hosts_behind_count": len(behind)}
        except Exception as err:  # the store is down: say so rather than fail the health answer
            extra = {"hosts_behind_error": f"{type(err).__name__}: {str(err)[:200]}"}
        return dict(self.counters, watermarks=len(self._watermarks), queued_batches=queued[0],
                    queued_events=queued[1], held_events=self._held_events, held_max_events=self.HELD_MAX_EVENTS,
                    **extra)

    def describe(self) -> str:
        return self.kind

    BEHIND_AFTER_NS = 60 * 10**9
    BEHIND_WINDOW_NS = 3600 * 10**9

    def hosts_behind(self, now_ns: int | None = None) -> list[dict[str, Any]]:
        """Hosts whose stored events stop more than ``BEHIND_AFTER_NS`` before now (among those heard from in the
        last ``BEHIND_WINDOW_NS``): an answer about recent minutes misses what they have not delivered yet.

        ``catching_up``: the host's latest batch arrived recently but holds old events (its agent is replaying
        its spool); otherwise the host has been silent (unreachable, down, or simply idle).
        """
        now_ns = now_ns or time.time_ns()
        p = self.dialect.param
        rows = self._execute(f"SELECT host, max(max_ts), max(received_ns) FROM ingest_batches "
                             f"WHERE received_ns >= {p('since')} GROUP BY host",
                             {"since": now_ns - self.BEHIND_WINDOW_NS})
        behind = []
        for host, newest_ts, received_ns in rows:
            if newest_ts is None or newest_ts >= now_ns - self.BEHIND_AFTER_NS:
                continue
            behind.append({"host": host, "newest_ts": int(newest_ts), "last_received_ns": int(received_ns),
                           "catching_up": int(received_ns) >= now_ns - self.BEHIND_AFTER_NS})
        return sorted(behind, key=lambda h: h["newest_ts"])

    def stop_writer(self) -> None:
        """Write what is queued, then stop the writer thread (called by ``close``)."""
        with self._queue_cond:
            self._closing = True
            self._queue_cond.notify_all()
        if self._writer is not None:
            self._writer.join(timeout=60)
            self._writer = None
        if self._ahead is not None:
            self._ahead.shutdown()
            self._ahead = None

    def close(self) -> None:
        self.stop_writer()

    # --- backend ----------------------------------------------------------
    dialect: Dialect  # set by each backend

    def _create(self) -> None:
        raise NotImplementedError

    def _load_watermarks(self) -> dict[tuple[str, str, int], int]:
        raise NotImplementedError

    def _sync_watermarks(self, idents: set[tuple[str, str, int]]) -> None:
        """Bring these instances' watermarks up to date before a write (shared stores: other replicas write too)."""

    def _prepare(self, key: BatchKey, batch: DecodedBatch) -> Prepared:
        """The batch as the writer takes it (called in the submitting thread); a ``BatchError`` refuses it."""
        raise NotImplementedError

    def _layout(self, batches: list[Prepared]) -> Any:
        """The part of writing these batches that decides nothing (``lays_out_ahead`` backends); ``_write_group``
        gets it back as ``laid_out`` when it writes exactly these batches."""
        raise NotImplementedError

    def _write_group(self, batches: list[tuple[BatchKey, Prepared]], laid_out: Any = None) -> dict[int, BaseException]:
        """Store all batches atomically (events, rollups, watermark rows); raise to store none.

        ``laid_out``: their ``_layout``, when it was made ahead. Returns {index: BatchError} for batches refused
        on content (those are left out, the rest stored).
        """
        raise NotImplementedError

    def _execute(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _delete_before(self, cutoff_ns: int) -> None:
        raise NotImplementedError
