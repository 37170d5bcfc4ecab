"""The agent's shipper: a sink that batches events and delivers them to a collector, exactly once.

Events are cut into batches (``agent.batch_max_events`` events or every
``agent.batch_interval``), encoded as msgpack columnar (``collector.codec``) and
appended to the on-disk spool first (``agent.spool``): the spool is the queue, so a
collector outage, a reconnect or an agent restart replays in order from disk. A
sender thread streams spooled batches over gRPC with a window of unacknowledged
batches and deletes them only when acknowledged. Each batch carries (host id, boot
id, instance, seq): replays after a collector crash are dropped as duplicates at
the collector, so every event is stored once.

With ``agent.ship = summary`` events pass through ``agent.summary`` first: only what
an incident needs is batched raw, the rest travels as rollup rows every
``agent.summary_interval``. ``agent.collector`` may name several replicas
(``GrpcTransport``: spread, failover, failback).

Without ``agent.collector`` the agent runs the collector in-process: the store from
``agent.embedded_store`` served on ``agent.embedded_listen`` (a unix socket, for
``dnstrace query``), and the sender hands batches to it without a network hop.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dnstrace import log
from dnstrace.flow import Sink
from dnstrace.ship.spool import Spool, SpoolRecord
from dnstrace.ship.summary import Summarizer
from dnstrace.wire.codec import (
    ROLLUP_SCHEMA_VERSION,
    SCHEMA_VERSION,
    STREAM_WINDOW_BATCHES,
    STREAM_WINDOW_BYTES,
    BatchError,
    encode_events,
    encode_rollup_batch,
)

if TYPE_CHECKING:
    from dnstrace.wire.client import CollectorClient

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
                 drain_timeout_s: float = 5.0, on_close=None, summary: Summarizer | None = None,
                 summary_interval_ns: int = 60 * 10**9, clock=time.monotonic_ns):
        self.host_id = host_id
        self.boot_id = boot_id or read_boot_id()
        self.instance = secrets.randbits(63)
        self.spool = spool
        self.transport = transport
        self.batch_max_events = max(1, batch_max_events)
        self.batch_interval_ns = batch_interval_ns
        self.drain_timeout_s = drain_timeout_s
        self._on_close = on_close
        self.summary = summary  # ``agent.ship = summary``: see ``agent.summary``
        self.summary_interval_ns = summary_interval_ns
        self._clock = clock  # monotonic ns; benchmarks replay an hour with a simulated one
        self._summary_since = clock()
        self._seq = 0
        self._buffer: list[dict] = []
        self._buffer_since = clock()
        self._buffer_lock = threading.Lock()
        self._stop = threading.Event()
        self.log = log.get("shipper")
        self.counters = {"events_in": 0, "batches_made": 0, "encode_errors": 0, "bytes_spooled": 0}
        spool.on_change = self._spool_changed
        self._thread = threading.Thread(target=self._send_loop, name="shipper", daemon=True)
        self._thread.start()

    # --- Sink ---------------------------------------------------------------------
    def handle(self, events: list[dict]) -> None:
        with self._buffer_lock:
            self.counters["events_in"] += len(events)
            if self.summary is not None:
                events = self.summary.take(events)
            if not self._buffer:
                self._buffer_since = self._clock()
            self._buffer.extend(events)
            while len(self._buffer) >= self.batch_max_events:
                chunk = self._buffer[: self.batch_max_events]
                del self._buffer[: self.batch_max_events]
                self._spool(chunk)

    def tick(self, now_ns: int | None = None) -> None:
        with self._buffer_lock:
            now = self._clock()
            if self.summary is not None and now - self._summary_since >= self.summary_interval_ns:
                self.flush_locked()
            elif self._buffer and now - self._buffer_since >= self.batch_interval_ns:
                chunk, self._buffer = self._buffer, []
                self._spool(chunk)

    def flush(self) -> None:
        """Spool whatever is buffered now, every open rollup minute included (shutdown, tests)."""
        with self._buffer_lock:
            self.flush_locked(final=True)

    def flush_locked(self, final: bool = False) -> None:
        """Spool the buffered events, with the summary's rollup rows when in summary mode."""
        rollups = None
        if self.summary is not None:
            rollups = self.summary.drain(final)
            self._summary_since = self._clock()
        if self._buffer or rollups:
            chunk, self._buffer = self._buffer, []
            self._spool(chunk, rollups)

    def _spool(self, events: list[dict], rollups: dict | None = None) -> None:
        version = SCHEMA_VERSION if rollups is None else ROLLUP_SCHEMA_VERSION
        try:
            payload = encode_events(events) if rollups is None else encode_rollup_batch(events, rollups)
        except Exception as err:  # an unencodable value must not stop the agent
            self.counters["encode_errors"] += len(events)
            self.log.error("cannot encode batch", error=str(err), events=len(events))
            return
        self._seq += 1
        self.counters["batches_made"] += 1
        self.counters["bytes_spooled"] += len(payload)
        self.spool.append(SpoolRecord(version, self.host_id, self.boot_id, self.instance, self._seq,
                                      len(events), payload))
        self._buffer_since = self._clock()

    reports_losses = True  # the pipeline turns spool_evicted / spool_dropped into ``agent`` events and metrics

    def stats(self) -> dict:
        spool = self.spool.stats()
        stats = dict(self.counters, spool=spool, transport=self.transport.stats(),
                     spool_evicted=spool["evicted_events"], spool_dropped=spool["dropped_events"])
        if self.summary is not None:
            stats["summary"] = dict(self.summary.counters)
        return stats

    def gauges(self) -> dict:
        """Live spool figures for /metrics (``dnstrace_spool_*{sink="shipper"}``)."""
        spool = self.spool.stats()
        return {"spool_pending_batches": spool["pending_batches"], "spool_pending_events": spool["pending_events"],
                "spool_bytes": spool["bytes"], "spool_degraded": 1 if spool["degraded"] else 0}

    def _spool_changed(self, what: str, details: dict) -> None:
        if what == "recovered":
            self.log.info("spool writable again; spooling resumed", spool=self.spool.directory, **details)
        elif what == "degraded":
            self.log.error("spool cannot be written; new batches are dropped and counted until it can",
                           spool=self.spool.directory, **details)
        else:
            self.log.warning(f"spool {what}", spool=self.spool.directory, **details)

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
    from dnstrace.wire import dnstrace_pb2

    return dnstrace_pb2.Batch(schema_version=record.schema_version, host_id=record.host_id,
                              boot_id=record.boot_id, instance=record.instance, seq=record.seq,
                              event_count=record.event_count, events=record.events)


class Endpoint:
    """One collector address to stream to; ``server_name`` is the name TLS checks when it was resolved from one."""

    __slots__ = ("address", "server_name")

    def __init__(self, address: str, server_name: str = ""):
        self.address, self.server_name = address, server_name

    def __repr__(self) -> str:
        return self.address


def resolve_endpoints(addresses: list[str], resolve=socket.getaddrinfo) -> list[Endpoint]:
    """Every configured address; a DNS name becomes one endpoint per address it resolves to."""
    endpoints: list[Endpoint] = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        bare = host.strip("[]")
        if address.startswith("unix:") or _is_ip(bare):
            endpoints.append(Endpoint(address))
            continue
        try:
            infos = resolve(bare, int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            continue  # unresolvable now: the other addresses still count, and the next session retries
        seen = []
        for info in infos:
            ip = info[4][0]
            if ip not in seen:
                seen.append(ip)
                endpoints.append(Endpoint(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", server_name=bare))
    return endpoints


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def preference(spread_key: str, endpoints: list[Endpoint]) -> list[Endpoint]:
    """Rendezvous order: each agent prefers its own replica (agents spread), the same one after every failover."""
    def score(endpoint: Endpoint) -> bytes:
        return hashlib.blake2b(f"{spread_key}|{endpoint.address}".encode(), digest_size=8).digest()

    return sorted(endpoints, key=score, reverse=True)


class GrpcTransport:
    """Streams spooled batches to remote collector replicas; one session = one Ingest stream to one replica.

    ``address`` is one address or several comma-separated (replicas in front of one store; a DNS
    name stands for every address it resolves to, re-resolved each session). Each agent ranks the
    replicas by rendezvous hash of its ``spread_key`` (host id), so agents spread over replicas and
    each comes back to the same one: a session tries them in that order, moving on at once when
    one is unreachable; a session on any but the first ends itself gracefully (everything in flight
    acknowledged) after ``failback_s`` so the preferred replica is tried again.
    """

    def __init__(self, address: str, *, insecure: bool = False, ca: str = "", cert: str = "", key: str = "",
                 token: str = "", server_name: str = "", spread_key: str = "", failback_s: float = 30.0,
                 resolve=socket.getaddrinfo):
        self.addresses = [a.strip() for a in address.split(",") if a.strip()]
        # Clients are made per replica when first needed; a TLS file that is missing or not PEM must stop
        # the agent at start (exit 2), not leave it running and delivering nothing.
        from dnstrace.wire import auth

        for each in self.addresses:
            auth.channel_credentials(each, insecure, ca, cert, key)
        self.address = address
        self._client_options: dict[str, Any] = dict(insecure=insecure, ca=ca, cert=cert, key=key, token=token)
        self._server_name = server_name
        self.spread_key = spread_key or socket.gethostname()
        self.failback_s = failback_s
        self._resolve = resolve
        self._clients: dict[str, CollectorClient] = {}
        self.log = log.get("shipper")
        self.counters: dict[str, Any] = {"sessions": 0, "batches_sent": 0, "batches_acked": 0, "batches_duplicate": 0,
                         "events_acked": 0, "batches_refused": 0, "errors": 0, "connected": False,
                         "last_error": "", "collector": "", "failovers": 0, "failbacks": 0, "unreachable": 0}
        self._call = None
        self._lock = threading.Lock()

    def _client(self, endpoint: Endpoint):
        from dnstrace.wire.client import CollectorClient

        client = self._clients.get(endpoint.address)
        if client is None:
            client = self._clients[endpoint.address] = CollectorClient(
                endpoint.address, server_name=self._server_name or endpoint.server_name, **self._client_options)
        return client

    def endpoints(self) -> list[Endpoint]:
        return preference(self.spread_key, resolve_endpoints(self.addresses, self._resolve))

    def run_session(self, spool: Spool, stop: threading.Event) -> bool:
        endpoints = self.endpoints()
        if not endpoints:
            self.counters["errors"] += 1
            self.counters["last_error"] = f"no collector address resolves: {self.address}"[:300]
            return False
        for rank, endpoint in enumerate(endpoints):
            outcome = self._stream(endpoint, rank, spool, stop)
            if outcome != "unreachable" or stop.is_set():
                return outcome == "progressed"
            self.counters["unreachable"] += 1
        return False

    def _stream(self, endpoint: Endpoint, rank: int, spool: Spool, stop: threading.Event) -> str:
        """One Ingest stream: "progressed", "failed" (nothing acknowledged) or "unreachable" (try the next)."""
        import grpc

        inflight: deque = deque()
        inflight_bytes = [0]
        room = threading.Condition()
        session_over = threading.Event()
        acked = [0]
        # Not on the preferred replica: hand back gracefully after failback_s (stop sending, drain acks, end).
        fail_back_at = time.monotonic() + self.failback_s if rank else None

        def requests():
            cursor = None
            while not (stop.is_set() or session_over.is_set()):
                if fail_back_at is not None and time.monotonic() >= fail_back_at:
                    with room:
                        while inflight and not session_over.is_set():
                            room.wait(0.2)
                    self.counters["failbacks"] += 1
                    return  # the stream ends once its acks are in; the next session tries the preferred one
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
        call = self._client(endpoint).ingest_stream(requests())
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
                if not acked[0]:
                    if self.counters["collector"] and self.counters["collector"] != endpoint.address:
                        self.counters["failovers"] += 1
                    self.counters["collector"] = endpoint.address
                acked[0] += 1
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
                return "progressed" if acked[0] else "failed"
            self.counters["errors"] += 1
            self.counters["last_error"] = f"{endpoint.address}: {code.name}: {details}"[:300]
            if code == grpc.StatusCode.INVALID_ARGUMENT and inflight and "schema version" not in details:
                # The oldest unacknowledged batch can never be accepted: drop it rather than block forever.
                position, seq, count, _ = inflight[0]
                spool.ack(position)
                self.counters["batches_refused"] += 1
                self.log.error("collector refused a batch; dropped", seq=seq, events=count, reason=details)
                return "progressed"
            self.log.warning("collector stream ended", collector=endpoint.address, code=code.name, reason=details)
            if code == grpc.StatusCode.UNAVAILABLE and not acked[0]:
                return "unreachable"
        finally:
            session_over.set()
            with self._lock:
                self._call = None
        return "progressed" if acked[0] else "failed"

    def interrupt(self) -> None:
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def stats(self) -> dict:
        return dict(self.counters)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


class LocalTransport:
    """Hands spooled batches to an in-process collector (the embedded default)."""

    def __init__(self, server):
        self.server = server
        self.log = log.get("shipper")
        self.counters: dict[str, Any] = {"batches_acked": 0, "batches_duplicate": 0, "events_acked": 0,
                                         "batches_refused": 0, "errors": 0, "connected": True, "failing": False,
                                         "last_error": ""}

    def run_session(self, spool: Spool, stop: threading.Event) -> bool:
        progressed = False
        while not stop.is_set():
            records = spool.read(None, 16, timeout_s=0.2)
            # Queue them all first so the store's writer can commit them as one group, then settle in order.
            admitted: list[tuple[tuple[int, int], SpoolRecord, Any, Exception | None]] = []
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
                    self.counters["failing"] = True
                    self.counters["last_error"] = _one_line(f"{type(err).__name__}: {err}")[:300]
                    self.log.error("embedded store failed; batches stay in the spool", error=str(err))
                    return progressed
                self.counters["failing"] = False
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def make_sink(config, embedded: Callable[[Any], Any] | None = None) -> Shipper:
    """The shipper for ``dnstrace agent``: remote collector when ``agent.collector`` is set, else embedded.

    ``embedded(config)`` starts the in-process collector (``dnstrace.collector.embedded.start``;
    ``dnstrace.pipeline.shipping`` passes it): the shipper hands batches to its ``admit``/``finish``
    and calls its ``close`` last, knowing nothing of its store or server."""
    spool = Spool(config["agent.spool_dir"], config["agent.spool_max_bytes"])
    on_close = None
    if config["agent.collector"]:
        transport: GrpcTransport | LocalTransport = GrpcTransport(config["agent.collector"], insecure=config["agent.insecure"],
                                  ca=config["agent.tls_ca"], cert=config["agent.tls_cert"],
                                  key=config["agent.tls_key"], token=config["agent.ingest_token"],
                                  spread_key=config["agent.host_id"], failback_s=config["agent.collector_failback"] / 1e9)
    else:
        if embedded is None:
            raise ValueError("agent.collector is empty and no embedded collector was given")
        local = embedded(config)
        transport = LocalTransport(local)
        on_close = local.close

    summary = None
    if config["agent.ship"] == "summary":
        summary = Summarizer(config["agent.summary_slow"], config["agent.summary_sample"])
    return Shipper(host_id=config["agent.host_id"], spool=spool, transport=transport,
                   batch_max_events=config["agent.batch_max_events"],
                   batch_interval_ns=config["agent.batch_interval"], on_close=on_close, summary=summary,
                   summary_interval_ns=config["agent.summary_interval"])
