"""The agent's shipper: a sink that batches events and delivers them to a collector, exactly once.

Events are cut into batches (``agent.batch_max_events`` events or every
``agent.batch_interval``), encoded as msgpack columnar (``collector.codec``) and
appended to the on-disk spool first (``agent.spool``): the spool is the queue, so a
collector outage, a reconnect or an agent restart replays in order from disk. A
sender thread streams spooled batches over gRPC with a window of unacknowledged
batches and deletes them only when acknowledged. Each batch carries (host id, boot
id, instance, seq): replays after a collector crash are dropped as duplicates at
the collector, so every event is stored once.

Without ``agent.collector`` the agent runs the collector in-process: the store from
``agent.embedded_store`` served on ``agent.embedded_listen`` (a unix socket, for
``dnstrace query``), and the sender hands batches to it without a network hop.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque

from dnstrace import log
from dnstrace.agent.runtime import Sink
from dnstrace.agent.spool import Spool, SpoolRecord
from dnstrace.collector.codec import (SCHEMA_VERSION, STREAM_WINDOW_BATCHES, STREAM_WINDOW_BYTES, BatchError,
                                      encode_events)

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 2.0


def read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


class Shipper(Sink):
    name = "shipper"

    def __init__(self, *, host_id: str, spool: Spool, transport, batch_max_events: int = 5000,
                 batch_interval_ns: int = 1_000_000_000, boot_id: str | None = None,
                 drain_timeout_s: float = 5.0, on_close=None):
        self.host_id = host_id
        self.boot_id = boot_id or read_boot_id()
        self.instance = secrets.randbits(63)
        self.spool = spool
        self.transport = transport
        self.batch_max_events = max(1, batch_max_events)
        self.batch_interval_ns = batch_interval_ns
        self.drain_timeout_s = drain_timeout_s
        self._on_close = on_close
        self._seq = 0
        self._buffer: list[dict] = []
        self._buffer_since = time.monotonic_ns()
        self._buffer_lock = threading.Lock()
        self._stop = threading.Event()
        self.log = log.get("shipper")
        self.counters = {"events_in": 0, "batches_made": 0, "encode_errors": 0}
        self._thread = threading.Thread(target=self._send_loop, name="shipper", daemon=True)
        self._thread.start()

    # --- Sink ---------------------------------------------------------------------
    def handle(self, events: list[dict]) -> None:
        with self._buffer_lock:
            if not self._buffer:
                self._buffer_since = time.monotonic_ns()
            self._buffer.extend(events)
            self.counters["events_in"] += len(events)
            while len(self._buffer) >= self.batch_max_events:
                chunk = self._buffer[: self.batch_max_events]
                del self._buffer[: self.batch_max_events]
                self._spool(chunk)

    def tick(self, now_ns: int | None = None) -> None:
        with self._buffer_lock:
            if self._buffer and time.monotonic_ns() - self._buffer_since >= self.batch_interval_ns:
                self.flush_locked()

    def flush(self) -> None:
        """Spool whatever is buffered now (used on shutdown and by tests)."""
        with self._buffer_lock:
            self.flush_locked()

    def flush_locked(self) -> None:
        if self._buffer:
            chunk, self._buffer = self._buffer, []
            self._spool(chunk)

    def _spool(self, events: list[dict]) -> None:
        try:
            payload = encode_events(events)
        except Exception as err:  # an unencodable value must not stop the agent
            self.counters["encode_errors"] += len(events)
            self.log.error("cannot encode batch", error=str(err), events=len(events))
            return
        self._seq += 1
        self.counters["batches_made"] += 1
        self.spool.append(SpoolRecord(SCHEMA_VERSION, self.host_id, self.boot_id, self.instance, self._seq,
                                      len(events), payload))
        self._buffer_since = time.monotonic_ns()

    def stats(self) -> dict:
        return dict(self.counters, spool=self.spool.stats(), transport=self.transport.stats())

    def wait_delivered(self, timeout_s: float) -> bool:
        """True once everything spooled so far has been acknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.spool.pending()[0] == 0:
                return True
            time.sleep(0.02)
        return self.spool.pending()[0] == 0

    def close(self) -> None:
        if self._stop.is_set():
            return
        self.flush()
        delivered = self.wait_delivered(self.drain_timeout_s)
        if not delivered:
            batches, events = self.spool.pending()
            self.log.warning("collector did not take everything before shutdown; kept in the spool",
                             batches=batches, events=events, spool=self.spool.directory)
        self._stop.set()
        self.transport.interrupt()
        self._thread.join(timeout=5)
        self.transport.close()
        self.spool.close()
        if self._on_close:
            self._on_close()

    # --- sending ------------------------------------------------------------------
    def _send_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                progressed = self.transport.run_session(self.spool, self._stop)
            except Exception as err:  # never let the sender thread die
                self.log.error("sender failed", error=f"{type(err).__name__}: {err}")
                progressed = False
            if self._stop.is_set():
                break
            backoff = BACKOFF_MIN_S if progressed else min(BACKOFF_MAX_S, backoff * 2)
            self._stop.wait(backoff)


def _batch_message(record: SpoolRecord):
    from dnstrace.collector import dnstrace_pb2

    return dnstrace_pb2.Batch(schema_version=record.schema_version, host_id=record.host_id,
                              boot_id=record.boot_id, instance=record.instance, seq=record.seq,
                              event_count=record.event_count, events=record.events)


class GrpcTransport:
    """Streams spooled batches to a remote collector; one session = one Ingest stream."""

    def __init__(self, address: str, *, insecure: bool = False, ca: str = "", cert: str = "", key: str = "",
                 token: str = "", server_name: str = ""):
        from dnstrace.collector.client import CollectorClient

        self.address = address
        self.client = CollectorClient(address, insecure=insecure, ca=ca, cert=cert, key=key, token=token,
                                      server_name=server_name)
        self.log = log.get("shipper")
        self.counters = {"sessions": 0, "batches_sent": 0, "batches_acked": 0, "batches_duplicate": 0,
                         "events_acked": 0, "batches_refused": 0, "errors": 0, "connected": False,
                         "last_error": ""}
        self._call = None
        self._lock = threading.Lock()

    def run_session(self, spool: Spool, stop: threading.Event) -> bool:
        import grpc

        inflight: deque = deque()
        inflight_bytes = [0]
        room = threading.Condition()
        session_over = threading.Event()
        progressed = False

        def requests():
            cursor = None
            while not (stop.is_set() or session_over.is_set()):
                with room:
                    if len(inflight) >= STREAM_WINDOW_BATCHES or inflight_bytes[0] >= STREAM_WINDOW_BYTES:
                        room.wait(0.2)
                        continue
                    want = min(STREAM_WINDOW_BATCHES - len(inflight), 16)
                for position, record in spool.read(cursor, want, timeout_s=0.2):
                    with room:
                        inflight.append((position, record.seq, record.event_count, len(record.events)))
                        inflight_bytes[0] += len(record.events)
                    cursor = (position[0], position[1] + 1)
                    self.counters["batches_sent"] += 1
                    yield _batch_message(record)

        self.counters["sessions"] += 1
        call = self.client.ingest_stream(requests())
        with self._lock:
            self._call = call
        try:
            for ack in call:
                with room:
                    position, seq, count, size = inflight.popleft()
                    inflight_bytes[0] -= size
                    room.notify_all()
                if ack.seq != seq:
                    self.log.warning("ack out of order", expected=seq, got=ack.seq)
                spool.ack(position)
                progressed = True
                self.counters["connected"] = True
                self.counters["batches_acked"] += 1
                if ack.duplicate:
                    self.counters["batches_duplicate"] += 1
                else:
                    self.counters["events_acked"] += count
        except grpc.RpcError as err:
            code = err.code()
            details = err.details() or ""
            self.counters["connected"] = False
            if code == grpc.StatusCode.CANCELLED and stop.is_set():
                return progressed
            self.counters["errors"] += 1
            self.counters["last_error"] = f"{code.name}: {details}"[:300]
            if code == grpc.StatusCode.INVALID_ARGUMENT and inflight and "schema version" not in details:
                # The oldest unacknowledged batch can never be accepted: drop it rather than block forever.
                position, seq, count, _ = inflight[0]
                spool.ack(position)
                self.counters["batches_refused"] += 1
                self.log.error("collector refused a batch; dropped", seq=seq, events=count, reason=details)
                return True
            self.log.warning("collector stream ended", collector=self.address, code=code.name, reason=details)
        finally:
            session_over.set()
            with self._lock:
                self._call = None
        return progressed

    def interrupt(self) -> None:
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def stats(self) -> dict:
        return dict(self.counters)

    def close(self) -> None:
        self.client.close()


class LocalTransport:
    """Hands spooled batches to an in-process collector (the embedded default)."""

    def __init__(self, server):
        self.server = server
        self.log = log.get("shipper")
        self.counters = {"batches_acked": 0, "batches_duplicate": 0, "events_acked": 0, "batches_refused": 0,
                         "errors": 0, "connected": True}

    def run_session(self, spool: Spool, stop: threading.Event) -> bool:
        progressed = False
        while not stop.is_set():
            records = spool.read(None, 16, timeout_s=0.2)
            # Queue them all first so the store's writer can commit them as one group, then settle in order.
            admitted = []
            for position, record in records:
                try:
                    admitted.append((position, record, self.server.admit(_batch_message(record)), None))
                except Exception as err:
                    admitted.append((position, record, None, err))
                    break  # later records wait for the next round, after this one is settled
            for position, record, pending, admit_error in admitted:
                try:
                    if admit_error is not None:
                        raise admit_error
                    stored, events = self.server.finish(pending)
                except BatchError as err:
                    spool.ack(position)
                    self.counters["batches_refused"] += 1
                    self.log.error("embedded collector refused a batch; dropped", seq=record.seq, reason=str(err))
                    continue
                except Exception as err:
                    self.counters["errors"] += 1
                    self.log.error("embedded store failed", error=str(err))
                    return progressed
                spool.ack(position)
                progressed = True
                self.counters["batches_acked"] += 1
                if stored:
                    self.counters["events_acked"] += events
                else:
                    self.counters["batches_duplicate"] += 1
        return progressed

    def interrupt(self) -> None:
        pass

    def stats(self) -> dict:
        return dict(self.counters)

    def close(self) -> None:
        pass


def make_sink(config) -> Shipper:
    """The shipper for ``dnstrace agent``: remote collector when ``agent.collector`` is set, else embedded."""
    spool = Spool(config["agent.spool_dir"], config["agent.spool_max_bytes"])
    on_close = None
    if config["agent.collector"]:
        transport = GrpcTransport(config["agent.collector"], insecure=config["agent.insecure"],
                                  ca=config["agent.tls_ca"], cert=config["agent.tls_cert"],
                                  key=config["agent.tls_key"], token=config["agent.ingest_token"])
    else:
        from dnstrace.collector.server_cmd import start_web

        server = start_embedded_collector(config)
        transport = LocalTransport(server)
        try:
            web = start_web(config, server.store, config["agent.web_listen"])
        except Exception:
            server.stop()
            server.store.close()
            raise

        def on_close():
            if web:
                web.stop()
            server.stop()
            server.store.close()

    return Shipper(host_id=config["agent.host_id"], spool=spool, transport=transport,
                   batch_max_events=config["agent.batch_max_events"],
                   batch_interval_ns=config["agent.batch_interval"], on_close=on_close)


def start_embedded_collector(config):
    """The single-node default: a DuckDB store served on a local socket, inside the agent process."""
    from dnstrace.collector.server import CollectorServer
    from dnstrace.collector.store import open_store

    store = open_store(config["agent.embedded_store"], config["collector.retention"])
    try:
        server = CollectorServer(store, config["agent.embedded_listen"], insecure=config["collector.insecure"],
                                 tls_cert=config["collector.tls_cert"], tls_key=config["collector.tls_key"],
                                 tls_client_ca=config["collector.tls_client_ca"],
                                 ingest_token=config["collector.ingest_token"],
                                 query_token=config["collector.query_token"],
                                 max_batch_bytes=config["collector.max_batch_bytes"], workers=4)
        server.start()
    except Exception:
        store.close()
        raise
    log.get("shipper").info("embedded collector serving", listen=server.address, store=store.describe())
    return server
