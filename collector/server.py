"""The collector process: gRPC ingest, queries and health over one store.

``CollectorServer`` validates every batch before it touches the store (envelope,
schema version, size, payload structure and types): a bad batch ends that stream
with a gRPC error status and a counter, never a crash and never half a batch.
Accepted batches are queued to the store's writer (group commit, exactly-once per
batch key) while the stream keeps reading, and are acknowledged in order, each only
after its commit. The same object serves the embedded collector inside the
agent (``ingest_local`` skips gRPC) and ``dnstrace collector``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent import futures

import msgpack

from dnstrace import log
from dnstrace.collector import auth
from dnstrace.collector.codec import (SCHEMA_VERSION, STREAM_WINDOW_BATCHES, SUPPORTED_VERSIONS, BatchError,
                                      decode_batch)
from dnstrace.collector.query import QuerySpec
from dnstrace.collector.store import BatchKey, Store
from dnstrace.errors import DnstraceError, UsageError

MAX_EVENTS_PER_BATCH = 1_000_000
_ENVELOPE_SLACK = 1 << 20


class CollectorServer:
    def __init__(self, store: Store, listen: str, *, insecure: bool = False, tls_cert: str = "",
                 tls_key: str = "", tls_client_ca: str = "", ingest_token: str = "", query_token: str = "",
                 max_batch_bytes: int = 64 << 20, workers: int = 16, retention_interval_s: float = 60.0):
        self.store = store
        self.listen = listen
        self.max_batch_bytes = max_batch_bytes
        self.log = log.get("collector")
        self.counters = {"batches_received": 0, "batches_rejected": 0, "rejected_malformed": 0,
                         "rejected_version": 0, "rejected_oversized": 0, "rejected_auth": 0,
                         "store_errors": 0, "queries": 0, "query_errors": 0, "streams": 0}
        self._counter_lock = threading.Lock()
        self._credentials = auth.server_credentials(listen, insecure, tls_cert, tls_key, tls_client_ca)
        self._tokens = (ingest_token, query_token)
        self._workers = workers
        self._retention_interval_s = retention_interval_s
        self._stop = threading.Event()
        self._server = None
        self.port: int | None = None

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> "CollectorServer":
        import grpc

        from dnstrace.collector import dnstrace_pb2_grpc

        limit = self.max_batch_bytes * 2 + _ENVELOPE_SLACK
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="collector"),
            interceptors=[auth.make_token_interceptor(*self._tokens, on_refused=self._refused)],
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 256 << 20),
                     ("grpc.so_reuseport", 0)],
        )
        dnstrace_pb2_grpc.add_CollectorServicer_to_server(_Servicer(self), self._server)
        address = self.listen
        if auth.is_unix(address):
            path = address[len("unix:"):]
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)  # a stale socket from a previous run
        try:
            if self._credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, self._credentials)
        except RuntimeError as err:
            raise DnstraceError(f"cannot listen on {address}: {err}",
                                hint="is the address valid and free? (HOST:PORT or unix:PATH)") from None
        if not auth.is_unix(address) and not self.port:
            raise DnstraceError(f"cannot listen on {address}", hint="is the port already in use?")
        self._server.start()
        if auth.is_unix(address):
            os.chmod(address[len("unix:"):], 0o660)
        threading.Thread(target=self._retention_loop, name="retention", daemon=True).start()
        return self

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
        self._stop.set()
        if self._server is not None:
            # Bounded: grpcio can leave a call whose request failed to deserialize unfinished forever, and
            # then the shutdown event never fires (seen with 1.x here, with or without our handler).
            self._server.stop(grace_s).wait(grace_s + 3.0)
            self._server = None

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

    def _refused(self, why: str) -> None:
        self._count("rejected_auth")

    def accept(self, batch) -> tuple[bool, int]:
        """Validate and store one ``Batch`` message: (stored now, events). Raises BatchError."""
        return self.finish(self.admit(batch))

    def admit(self, batch):
        """Validate, decode and queue one ``Batch`` for the store's writer; ``finish`` waits for its commit."""
        self._count("batches_received")
        if batch.schema_version not in SUPPORTED_VERSIONS:
            self._count("rejected_version")
            raise BatchError(f"schema version {batch.schema_version} is not supported "
                             f"(this collector speaks {', '.join(map(str, SUPPORTED_VERSIONS))})")
        if len(batch.events) > self.max_batch_bytes:
            self._count("rejected_oversized")
            raise BatchError(f"batch of {len(batch.events)} bytes exceeds the limit of {self.max_batch_bytes}")
        if not batch.host_id or len(batch.host_id) > 255 or not batch.boot_id or len(batch.boot_id) > 64:
            self._count("rejected_malformed")
            raise BatchError("host_id and boot_id must be 1..255 / 1..64 characters")
        if batch.seq == 0 or batch.instance >= 2**63 or batch.seq >= 2**63:
            self._count("rejected_malformed")
            raise BatchError("seq must be 1..2^63-1 and instance below 2^63")
        try:
            decoded = decode_batch(batch.events, expected_count=batch.event_count, max_events=MAX_EVENTS_PER_BATCH,
                                   check_attrs_json=not self.store.validates_attrs_json,
                                   version=batch.schema_version)
        except BatchError:
            self._count("rejected_malformed")
            raise
        key = BatchKey(batch.host_id, batch.boot_id, batch.instance, batch.seq)
        return self.store.submit(key, decoded)

    def finish(self, pending) -> tuple[bool, int]:
        try:
            stored = pending.wait()
        except BatchError:
            self._count("rejected_malformed")
            raise
        except Exception:
            self._count("store_errors")
            raise
        return stored, pending.count if stored else 0

    def stats(self) -> dict:
        with self._counter_lock:
            counters = dict(self.counters)
        counters["store"] = self.store.stats()
        return counters


class _Servicer:
    """gRPC method handlers (generated base class is looked up lazily to keep imports light)."""

    def __init__(self, server: CollectorServer):
        self.server = server

    def Ingest(self, request_iterator, context):
        """Pipelined: a reader thread decodes and queues batch N+1 while batch N commits; acks stay in order."""
        import grpc

        from dnstrace.collector import dnstrace_pb2

        server = self.server
        server._count("streams")
        admitted: queue.Queue = queue.Queue(maxsize=STREAM_WINDOW_BATCHES)
        finished = threading.Event()

        def put(item) -> None:
            while not finished.is_set():
                try:
                    admitted.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue

        def read() -> None:
            try:
                for batch in request_iterator:
                    # Only the envelope fields outlive admit: the payload bytes are not held until the ack.
                    envelope = (batch.host_id, batch.instance, batch.seq)
                    try:
                        put((envelope, server.admit(batch), None))
                    except Exception as err:  # refused before queueing: no later batch of this stream is taken
                        put((envelope, None, err))
                        return
            except Exception as err:  # the stream broke (e.g. undecodable protobuf) or was cancelled
                put((None, None, err))
            finally:
                put(None)

        threading.Thread(target=read, name="ingest-reader", daemon=True).start()
        try:
            while True:
                item = admitted.get()
                if item is None:
                    return
                envelope, pending, error = item
                if envelope is None:
                    raise error  # as if the handler had read the stream itself: gRPC ends the call with an error
                host, instance, seq = envelope
                try:
                    if error is not None:
                        raise error
                    stored, events = server.finish(pending)
                except BatchError as err:
                    server._count("batches_rejected")
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batch seq {seq} refused: {err}")
                except Exception as err:
                    server.log.error("store failed", error=str(err), host=host, seq=seq)
                    context.abort(grpc.StatusCode.UNAVAILABLE, f"store failed: {type(err).__name__}")
                yield dnstrace_pb2.Ack(instance=instance, seq=seq, duplicate=not stored, stored=events)
        finally:
            finished.set()

    def Query(self, request, context):
        import grpc

        from dnstrace.collector import dnstrace_pb2

        started = time.perf_counter()
        self.server._count("queries")
        try:
            spec = QuerySpec.from_request(request)
            columns, rows = self.server.store.query(spec)
        except UsageError as err:
            self.server._count("query_errors")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message + (f" ({err.hint})" if err.hint else ""))
        except Exception as err:
            self.server._count("query_errors")
            self.server.log.error("query failed", error=str(err))
            context.abort(grpc.StatusCode.INTERNAL, f"query failed: {type(err).__name__}: {str(err)[:200]}")
        payload = msgpack.packb(rows, use_bin_type=True, default=str)
        return dnstrace_pb2.QueryResponse(columns=columns, rows=payload, row_count=len(rows),
                                          elapsed_ms=(time.perf_counter() - started) * 1e3)

    def Health(self, request, context):
        from dnstrace.collector import dnstrace_pb2

        return dnstrace_pb2.HealthResponse(status="serving", store=self.server.store.describe(),
                                           schema_version=SCHEMA_VERSION,
                                           stats=msgpack.packb(self.server.stats(), use_bin_type=True, default=str))


def from_config(store: Store, config, listen: str, workers: int = 16) -> CollectorServer:
    """A server for ``store`` on ``listen``, secured and bounded by the ``collector.*`` keys of ``config``
    (the standalone collector and the agent's embedded one are set up the same way)."""
    return CollectorServer(store, listen, insecure=config["collector.insecure"],
                           tls_cert=config["collector.tls_cert"], tls_key=config["collector.tls_key"],
                           tls_client_ca=config["collector.tls_client_ca"],
                           ingest_token=config["collector.ingest_token"], query_token=config["collector.query_token"],
                           max_batch_bytes=config["collector.max_batch_bytes"], workers=workers)
