"""The collector process: gRPC ingest, queries and health over one store.

``CollectorServer`` validates every batch before it touches the store (envelope,
schema version, size, payload structure, types and value ranges): a bad batch ends
that stream with a gRPC error status, a log line saying why and a counter, never a
crash and never half a batch. Accepted batches are queued to the store's writer
(group commit, exactly-once per batch key) while the stream keeps reading, and are
acknowledged in order, each only after its commit. The same object serves the
embedded collector inside the agent (``admit``/``finish`` skip gRPC) and
``dnstrace collector``.

Concurrency: gRPC runs on asyncio (``grpc.aio``) in one thread of its own, so an
open stream costs a coroutine and its buffers, not a thread: thousands of agents can
hold streams (idle ones included) while Health and Query keep answering. Limits:

- per stream: at most ``STREAM_WINDOW_BATCHES`` batches / ``STREAM_WINDOW_BYTES``
  decoded ahead of their acks (a stream that stops reading acks stops being read);
- global: ``max_inflight_bytes`` of batch payloads between receipt and commit, taken
  in arrival order, and ``max_streams`` open streams (more are refused with
  RESOURCE_EXHAUSTED, which agents retry);
- decoding runs in a small thread pool, queries in another (``max_queries`` at once;
  more are refused), so neither blocks the event loop nor each other.

Queries get a server-side deadline (the smaller of the client's and
``query_timeout_s``), are interrupted when the client goes away, and are bounded in
rows and estimated bytes (``query_limits``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TYPE_CHECKING, Any

import msgpack

from dnstrace import log
from dnstrace.collector.query.limits import QueryControl, QueryStopped
from dnstrace.collector.store.base import BatchKey, Store, _Pending
from dnstrace.errors import DnstraceError, UsageError
from dnstrace.wire import auth
from dnstrace.wire.codec import (
    SCHEMA_VERSION,
    STREAM_WINDOW_BATCHES,
    STREAM_WINDOW_BYTES,
    SUPPORTED_VERSIONS,
    BatchError,
    check_envelope,
    decode_batch,
)
from dnstrace.wire.query import QuerySpec

if TYPE_CHECKING:
    from dnstrace.config import Config

MAX_EVENTS_PER_BATCH = 1_000_000
_ENVELOPE_SLACK = 1 << 20
# Batches decoded at once, across all streams (each stream decodes one batch at a time). Decoding holds the
# GIL for most of its time, so more threads mostly wait on each other: on 2 cores with 4 agents into
# ClickHouse, 16 threads took 1.94 s of CPU per 1M events at 380k events/s, 2 threads 1.43 s at 455k
# (bench_collector, same run); a second thread still decodes while one is held back by the store.
DECODE_WORKERS = 2


class CollectorServer:
    def __init__(self, store: Store[Any], listen: str, *, insecure: bool = False, tls_cert: str = "",
                 tls_key: str = "", tls_client_ca: str = "", ingest_token: str = "", query_token: str = "",
                 max_batch_bytes: int = 64 << 20, workers: int = DECODE_WORKERS, retention_interval_s: float = 60.0,
                 max_streams: int = 4096, max_inflight_bytes: int = 256 << 20, max_queries: int = 4,
                 query_timeout_s: float = 30.0,
                 query_max_bytes: int = 256 << 20):
        self.store = store
        self.listen = listen
        self.max_batch_bytes = max_batch_bytes
        self.log = log.get("collector")
        self.counters = {"batches_received": 0, "batches_rejected": 0, "rejected_malformed": 0,
                         "rejected_version": 0, "rejected_oversized": 0, "rejected_auth": 0,
                         "rejected_streams": 0, "store_errors": 0, "queries": 0, "query_errors": 0,
                         "queries_refused": 0, "queries_cancelled": 0, "queries_timed_out": 0,
                         "queries_running": 0, "streams": 0, "streams_open": 0, "inflight_bytes": 0,
                         "inflight_waits": 0}
        self._counter_lock = threading.Lock()
        self._credentials = auth.server_credentials(listen, insecure, tls_cert, tls_key, tls_client_ca)
        self._tokens = (ingest_token, query_token)
        self._workers = max(1, workers)
        self._retention_interval_s = retention_interval_s
        self.max_streams = max_streams
        self.max_inflight_bytes = max_inflight_bytes
        self.max_queries = max_queries
        self.query_timeout_s = query_timeout_s
        self.query_max_bytes = query_max_bytes
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._server = None
        self._decode_pool: futures.ThreadPoolExecutor | None = None
        self._query_pool: futures.ThreadPoolExecutor | None = None
        self._budget: _ByteBudget | None = None
        self.port: int | None = None

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> CollectorServer:
        address = self.listen
        if auth.is_unix(address):
            path = address[len("unix:"):]
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)  # a stale socket from a previous run
        self._decode_pool = futures.ThreadPoolExecutor(self._workers, thread_name_prefix="collector-decode")
        self._query_pool = futures.ThreadPoolExecutor(self.max_queries, thread_name_prefix="collector-query")
        self._loop = asyncio.new_event_loop()
        started: futures.Future[int] = futures.Future()
        self._loop_thread = threading.Thread(target=self._run_loop, args=(started,), name="collector-grpc",
                                             daemon=True)
        self._loop_thread.start()
        try:
            self.port = started.result(timeout=30)
        except BaseException:
            self._shutdown_loop()
            raise
        if auth.is_unix(address):
            os.chmod(address[len("unix:"):], 0o660)
        threading.Thread(target=self._retention_loop, name="retention", daemon=True).start()
        return self

    def _run_loop(self, started: futures.Future[int]) -> None:
        loop = self._loop
        assert loop is not None  # made by start() before this thread
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(started))
        except BaseException as err:  # reported to start() when it happens before serving
            if not started.done():
                started.set_exception(err)
        finally:
            loop.close()

    async def _serve(self, started: futures.Future[int]) -> None:
        import grpc

        from dnstrace.wire import dnstrace_pb2_grpc

        self._budget = _ByteBudget(self.max_inflight_bytes, self._count)
        limit = self.max_batch_bytes * 2 + _ENVELOPE_SLACK
        server = grpc.aio.server(
            interceptors=[auth.make_token_interceptor(*self._tokens, on_refused=self._refused)],
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 256 << 20),
                     ("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 1 << 16),
                     # Idle agents keep their streams: notice dead peers instead of holding them forever.
                     ("grpc.keepalive_time_ms", 60_000), ("grpc.keepalive_timeout_ms", 20_000),
                     ("grpc.http2.min_ping_interval_without_data_ms", 10_000)],
        )
        dnstrace_pb2_grpc.add_CollectorServicer_to_server(_Servicer(self), server)
        address = self.listen
        try:
            if self._credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._credentials)
        except RuntimeError as err:
            raise DnstraceError(f"cannot listen on {address}: {err}",
                                hint="is the address valid and free? (HOST:PORT or unix:PATH)") from None
        if not auth.is_unix(address) and not port:
            raise DnstraceError(f"cannot listen on {address}", hint="is the port already in use?")
        await server.start()
        self._server = server
        started.set_result(port)
        while not self._stop.is_set():
            await asyncio.sleep(0.2)
        await server.stop(self._grace_s)

    _grace_s = 2.0

    @property
    def address(self) -> str:
        if auth.is_unix(self.listen):
            return self.listen
        host = self.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    def stop(self, grace_s: float = 2.0) -> None:
        self._grace_s = grace_s
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._stop.set()
        if self._loop_thread is not None:
            self._loop_thread.join(self._grace_s + 5.0)
            self._loop_thread = None
        self._server = None
        for pool in (self._decode_pool, self._query_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._decode_pool = self._query_pool = None

    def _retention_loop(self) -> None:
        while not self._stop.wait(self._retention_interval_s):
            try:
                self.store.apply_retention()
            except Exception as err:  # keep serving; say why retention failed
                self.log.warning("retention failed", error=str(err))

    # --- ingest ---------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[name] += n

    def _refused(self, why: str, method: str) -> None:
        self._count("rejected_auth")
        self.log.warning("call refused", reason=why, method=method.rsplit("/", 1)[-1])

    def accept(self, batch: Any) -> tuple[bool, int]:
        """Validate and store one ``Batch`` message: (stored now, events). Raises BatchError."""
        return self.finish(self.admit(batch))

    def admit(self, batch: Any) -> _Pending[Any]:
        """Validate, decode and queue one ``Batch`` for the store's writer; ``finish`` waits for its commit."""
        self._count("batches_received")
        if batch.schema_version not in SUPPORTED_VERSIONS:
            self._count("rejected_version")
            raise BatchError(f"schema version {batch.schema_version} is not supported "
                             f"(this collector speaks {', '.join(map(str, SUPPORTED_VERSIONS))})")
        if len(batch.events) > self.max_batch_bytes:
            self._count("rejected_oversized")
            raise BatchError(f"batch of {len(batch.events)} bytes exceeds the limit of {self.max_batch_bytes}")
        try:
            check_envelope(batch.host_id, batch.boot_id)
            if batch.seq == 0 or batch.instance >= 2**63 or batch.seq >= 2**63:
                raise BatchError("seq must be 1..2^63-1 and instance below 2^63")
            decoded = decode_batch(batch.events, expected_count=batch.event_count, max_events=MAX_EVENTS_PER_BATCH,
                                   check_attrs_json=not self.store.validates_attrs_json,
                                   version=batch.schema_version)
        except BatchError:
            self._count("rejected_malformed")
            raise
        key = BatchKey(batch.host_id, batch.boot_id, batch.instance, batch.seq)
        return self.store.submit(key, decoded)

    def finish(self, pending: _Pending[Any]) -> tuple[bool, int]:
        try:
            stored = pending.wait()
        except BatchError:
            self._count("rejected_malformed")
            raise
        except Exception:
            self._count("store_errors")
            raise
        return stored, pending.count if stored else 0

    def stats(self) -> dict[str, Any]:
        with self._counter_lock:
            counters: dict[str, Any] = dict(self.counters)
        counters["store"] = self.store.stats()
        return counters

    # --- queries --------------------------------------------------------------
    def run_query(self, spec: QuerySpec, control: QueryControl) -> tuple[list[str], list[dict[str, Any]]]:
        """In a query thread: plan and run one query under ``control`` (deadline, cancel, size bound)."""
        if control.stopped():
            raise control.stop_reason()
        return self.store.query(spec, control)


class _ByteBudget:
    """Global bound on batch bytes between receipt and commit; waiters are served in arrival order."""

    def __init__(self, limit: int, count: Callable[..., None] | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._count = count or (lambda name, n=1: None)  # the server's counters (the global budget only)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def acquire(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        self._count("inflight_waits")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((size, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as we were cancelled
            else:
                self._waiters.remove((size, waiter))
            raise

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit  # a batch bigger than the limit goes alone

    def _take(self, size: int) -> None:
        self.used += size
        self._count("inflight_bytes", size)

    def release(self, size: int) -> None:
        self.used -= size
        self._count("inflight_bytes", -size)
        while self._waiters and self._fits(self._waiters[0][0]):
            size, waiter = self._waiters.pop(0)
            if not waiter.done():
                self._take(size)
                waiter.set_result(None)


def _awaitable(pending: _Pending[Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """An asyncio future resolved (in the loop) when the store's writer resolves ``pending``."""
    future = loop.create_future()

    def done_in_loop() -> None:
        if not future.done():
            future.set_result(None)

    pending.add_done_callback(lambda _p: loop.call_soon_threadsafe(done_in_loop))
    return future


class _Servicer:
    """gRPC method handlers (coroutines on the server's event loop)."""

    def __init__(self, server: CollectorServer) -> None:
        self.server = server

    async def Ingest(self, request_iterator: Any, context: Any) -> Any:
        """Pipelined: a reader task decodes and queues batch N+1 while batch N commits; acks stay in order."""
        import grpc

        from dnstrace.wire import dnstrace_pb2

        server = self.server
        with server._counter_lock:
            over = server.counters["streams_open"] >= server.max_streams
            if not over:
                server.counters["streams_open"] += 1
                server.counters["streams"] += 1
        if over:
            server._count("rejected_streams")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the collector holds its limit of {server.max_streams} streams; retry later")
        loop = asyncio.get_running_loop()
        budget = server._budget
        assert budget is not None  # made by _serve before the first call
        window = asyncio.Semaphore(STREAM_WINDOW_BATCHES)
        window_bytes = _ByteBudget(STREAM_WINDOW_BYTES)
        admitted: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    size = len(batch.events)
                    await window.acquire()
                    await window_bytes.acquire(size)
                    await budget.acquire(size)
                    envelope = (batch.host_id, batch.instance, batch.seq)
                    try:
                        pending = await loop.run_in_executor(server._decode_pool, server.admit, batch)
                    except asyncio.CancelledError:  # the stream ended meanwhile: the batch may still commit
                        budget.release(size)
                        raise
                    except Exception as err:  # refused before queueing: no later batch of this stream is taken
                        budget.release(size)
                        admitted.put_nowait((envelope, None, None, err, 0))
                        return
                    del batch  # only the envelope outlives admit: payload bytes are not held until the ack
                    admitted.put_nowait((envelope, pending, _awaitable(pending, loop), None, size))
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the stream broke (e.g. undecodable protobuf)
                admitted.put_nowait((None, None, None, err, 0))
            finally:
                admitted.put_nowait(None)

        reader = loop.create_task(read())
        try:
            while True:
                item = await admitted.get()
                if item is None:
                    return
                envelope, pending, committed, error, size = item
                if envelope is None:
                    raise error  # as if the handler had read the stream itself: gRPC ends the call with an error
                host, instance, seq = envelope
                try:
                    if error is not None:
                        raise error
                    await committed
                    stored, events = server.finish(pending)  # resolved: no wait
                except BatchError as err:
                    server._count("batches_rejected")
                    server.log.warning("batch refused", host=host[:64], seq=seq, reason=str(err)[:300])
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batch seq {seq} refused: {err}")
                except Exception as err:
                    server.log.error("store failed", error=str(err), host=host[:64], seq=seq)
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"store failed: {type(err).__name__}")
                finally:
                    if size:
                        budget.release(size)
                        window_bytes.release(size)
                    window.release()
                yield dnstrace_pb2.Ack(instance=instance, seq=seq, duplicate=not stored, stored=events)
        finally:
            reader.cancel()
            # Batches already queued still commit (their acks are lost with the stream): give their bytes back.
            while not admitted.empty():
                item = admitted.get_nowait()
                if item is not None and item[4]:
                    budget.release(item[4])
            server._count("streams_open", -1)

    async def Query(self, request: Any, context: Any) -> Any:
        import grpc

        from dnstrace.wire import dnstrace_pb2

        server = self.server
        started = time.perf_counter()
        server._count("queries")
        with server._counter_lock:
            busy = server.counters["queries_running"] >= server.max_queries
            if not busy:
                server.counters["queries_running"] += 1
        if busy:
            server._count("queries_refused")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the collector is running its limit of {server.max_queries} queries; retry later")
        try:
            try:
                spec = QuerySpec.from_request(request)
                spec.validate()
            except UsageError as err:
                server._count("query_errors")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    err.message + (f" ({err.hint})" if err.hint else ""))
            remaining = context.time_remaining()
            timeout_s = server.query_timeout_s if remaining is None else min(server.query_timeout_s, remaining)
            control = QueryControl(timeout_s, server.query_max_bytes)
            work = asyncio.get_running_loop().run_in_executor(server._query_pool, server.run_query, spec, control)
            columns: list[str] = []
            rows: list[dict[str, Any]] = []
            stopped: str | None = None  # why the query was stopped
            try:
                columns, rows = await asyncio.wait_for(asyncio.shield(work), timeout_s + 0.5)
            except asyncio.CancelledError:  # the client went away (or the server stops)
                control.cancel("the client went away")
                server._count("queries_cancelled")
                server.log.info("query cancelled: the client went away")
                raise
            except TimeoutError:
                control.cancel("deadline")
                stopped = f"the query ran past its deadline of {timeout_s:.1f} s"
                server._count("queries_timed_out")
            except QueryStopped as err:
                server._count("queries_timed_out" if err.deadline else "queries_refused")
                stopped = str(err) or f"the query ran past its deadline of {timeout_s:.1f} s"
            except Exception as err:
                server._count("query_errors")
                server.log.error("query failed", error=str(err)[:300])
                await context.abort(grpc.StatusCode.INTERNAL, f"query failed: {type(err).__name__}: {str(err)[:200]}")
            if stopped is not None:
                server.log.warning("query stopped", reason=stopped)
                code = grpc.StatusCode.DEADLINE_EXCEEDED if "deadline" in stopped else grpc.StatusCode.RESOURCE_EXHAUSTED
                await context.abort(code, f"query stopped: {stopped}")
            row_count = len(rows)
            payload = msgpack.packb(rows, use_bin_type=True, default=str)
            del rows
            return dnstrace_pb2.QueryResponse(columns=columns, rows=payload, row_count=row_count,
                                              elapsed_ms=(time.perf_counter() - started) * 1e3)
        finally:
            server._count("queries_running", -1)

    async def Health(self, request: Any, context: Any) -> Any:
        from dnstrace.wire import dnstrace_pb2

        return dnstrace_pb2.HealthResponse(status="serving", store=self.server.store.describe(),
                                           schema_version=SCHEMA_VERSION,
                                           stats=msgpack.packb(self.server.stats(), use_bin_type=True, default=str))


def from_config(store: Store[Any], config: Config, listen: str) -> CollectorServer:
    """A server for ``store`` on ``listen``, secured and bounded by the ``collector.*`` keys of ``config``
    (the standalone collector and the agent's embedded one are set up the same way)."""
    return CollectorServer(store, listen, insecure=config["collector.insecure"],
                           tls_cert=config["collector.tls_cert"], tls_key=config["collector.tls_key"],
                           tls_client_ca=config["collector.tls_client_ca"],
                           ingest_token=config["collector.ingest_token"], query_token=config["collector.query_token"],
                           max_batch_bytes=config["collector.max_batch_bytes"])
