"""Fault-injection suite: a thousand agent streams, a full and a read-only spool, queries past their bounds.

Each test reproduces an operator's fault for real (loopback gRPC, a tiny tmpfs, a
read-only mount) and checks that nothing is lost silently: every event is stored once
or counted as dropped, and the collector keeps answering Health throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from collector_helpers import DNSTRACE
from recorded import make_events

from dnstrace.collector.server import CollectorServer
from dnstrace.collector.store.from_url import open_store
from dnstrace.errors import DnstraceError, EnvironmentProblem
from dnstrace.ship.shipper import LocalTransport, Shipper
from dnstrace.ship.spool import Spool, SpoolRecord
from dnstrace.wire import dnstrace_pb2
from dnstrace.wire.client import CollectorClient
from dnstrace.wire.codec import SCHEMA_VERSION, encode_events
from dnstrace.wire.query import QuerySpec

HERE = Path(__file__).resolve().parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def _swarm(address: str, first: int, count: int, batches: int, events: int, hold_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "stream_swarm.py"), address, str(first), str(count),
                             str(batches), str(events), str(hold_s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.timeout(300)
def test_thousand_streams_are_held_stored_once_and_health_answers_throughout(tmp_path):
    store = open_store("duckdb::memory:")
    server = CollectorServer(store, "127.0.0.1:0", insecure=True).start()
    try:
        procs = [_swarm(server.address, n * 250, 250, 2, 20, hold_s=12) for n in range(4)]
        client = CollectorClient(server.address, insecure=True, timeout_s=5)
        peak_open, health_failures, health_calls, query_calls = 0, [], 0, 0
        while any(p.poll() is None for p in procs):
            try:
                peak_open = max(peak_open, client.health()["stats"]["streams_open"])
                health_calls += 1
                client.query(QuerySpec(mode="top", group_by="host", limit=5))
                query_calls += 1
            except DnstraceError as err:
                health_failures.append(str(err))
            time.sleep(0.2)
        results = []
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err.decode()[-2000:]
            results.append(json.loads(out))
        assert sum(r["errors"] for r in results) == 0, results
        assert sum(r["opened"] for r in results) == 1000
        assert peak_open >= 1000, f"only {peak_open} streams were open at once"
        assert health_failures == [] and health_calls > 10 and query_calls > 10
        _, rows = client.query(QuerySpec(mode="top", group_by="host", limit=2000))
        assert len(rows) == 1000 and {r["count"] for r in rows} == {40}  # every event stored exactly once
        assert store.count() == 1000 * 40
        client.close()
    finally:
        server.stop()
        store.close()


def test_streams_beyond_the_limit_are_refused_not_starved():
    store = open_store("duckdb::memory:")
    server = CollectorServer(store, "127.0.0.1:0", insecure=True, max_streams=20).start()
    try:
        proc = _swarm(server.address, 0, 30, 1, 5, hold_s=3)
        out, err = proc.communicate(timeout=60)
        result = json.loads(out)
        # grpc's asyncio client (the swarm's) may report a stream the server refused as INTERNAL "Internal error
        # from Core" when its first write loses the race with the refusal (grpc/grpc#36066; the sync client the
        # shipper uses reports the server's status): the server's own count is the check that every one was refused.
        codes = dict(result["codes"])
        assert codes.pop("RESOURCE_EXHAUSTED", 0) + codes.pop("INTERNAL", 0) == 10 and not codes, result.get("details")
        assert all(d.startswith("RESOURCE_EXHAUSTED: the collector holds its limit of 20 streams")
                   or d == "INTERNAL: Internal error from Core" for d in result["details"]), result["details"]
        assert result["events"] == 20 * 5 and server.stats()["rejected_streams"] == 10
    finally:
        server.stop()
        store.close()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _events(n: int, seed: int) -> list[dict]:
    return make_events("spool", n, seed=seed)


@needs_root
def test_full_spool_drops_counted_and_shipping_resumes_by_itself(tiny_tmpfs):
    store = open_store("duckdb::memory:")
    server = CollectorServer(store, "unix:" + str(tiny_tmpfs.parent / "c.sock"), insecure=True)
    spool = Spool(str(tiny_tmpfs / "spool"), max_bytes=64 << 20)  # the file system fills long before the limit
    transport = LocalTransport(server)
    transport.run_session = _paused(transport.run_session)  # hold shipping while the disk fills
    shipper = Shipper(host_id="spool-host", spool=spool, transport=transport, batch_max_events=50, boot_id="b")
    try:
        filler = tiny_tmpfs / "filler"
        produced = 0
        for seed in range(400):  # ~15 KiB per batch: the 512 KiB tmpfs is full after ~30
            shipper.handle(_events(50, seed))
            produced += 50
        stats = spool.stats()
        assert stats["dropped_events"] > 0 and stats["degraded"], stats
        assert stats["appended_events"] + stats["dropped_events"] == produced
        filler.write_bytes(b"")  # nothing to free yet but the spool itself: let shipping drain it
        transport.run_session.resume()
        assert shipper.wait_delivered(60)
        for seed in range(400, 410):  # space is back: new batches spool and ship again
            shipper.handle(_events(50, seed))
            produced += 50
        assert shipper.wait_delivered(60)
        stats = spool.stats()
        assert not stats["degraded"] and stats["torn_records"] == 0
        assert store.count() + stats["dropped_events"] == produced  # every lost event is counted
        assert shipper.stats()["spool_dropped"] == stats["dropped_events"]
    finally:
        shipper.close()
        store.close()


def _paused(run_session):
    gate = threading.Event()

    def wrapped(spool, stop):
        while not gate.wait(0.1):
            if stop.is_set():
                return False
        return run_session(spool, stop)

    wrapped.resume = gate.set
    return wrapped


@needs_root
def test_read_only_spool_refuses_at_start(tiny_tmpfs):
    (tiny_tmpfs / "spool").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    with pytest.raises(EnvironmentProblem, match="not usable: Read-only file system") as err:
        Spool(str(tiny_tmpfs / "spool"), max_bytes=1 << 20)
    assert err.value.exit_code == 3
    proc = subprocess.run(DNSTRACE + ["agent", "--spool-dir", str(tiny_tmpfs / "spool")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dnstrace: error:")]
    assert len(errors) == 1 and "spool directory" in errors[0] and "Read-only" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_small_spool_evicts_a_part_not_everything(tmp_path):
    spool = Spool(str(tmp_path / "spool"), max_bytes=200 << 10)
    payload = encode_events(_events(20, 1))
    for seq in range(1, 200):
        spool.append(SpoolRecord(SCHEMA_VERSION, "h", "b", 1, seq, 20, payload))
    stats = spool.stats()
    assert stats["evicted_batches"] > 0
    # what is left is most of the limit, not one batch: evictions dropped old segments only
    assert stats["bytes"] > (200 << 10) * 0.8 and stats["pending_batches"] > 10
    assert stats["pending_batches"] + stats["evicted_batches"] == 199


@pytest.fixture(scope="module")
def loaded_collector():
    store = open_store("duckdb::memory:")
    server = CollectorServer(store, "127.0.0.1:0", insecure=True, query_max_bytes=8 << 20).start()
    events = make_events("load", 5000)
    for seq in range(1, 41):
        batch = dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id="load", boot_id="b", instance=1, seq=seq,
                                   event_count=5000, events=encode_events(
                                       [dict(e, ts=e["ts"] + seq * 10**10) for e in events]))
        server.accept(batch)
    yield server
    server.stop()
    store.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_query_past_the_size_bound_is_refused_and_memory_returns(loaded_collector):
    client = CollectorClient(loaded_collector.address, insecure=True, timeout_s=60)
    big = QuerySpec(limit=200_000)
    with pytest.raises(DnstraceError, match="RESOURCE_EXHAUSTED.*exceed this collector's bound"):
        client.query(big)
    # The first big query warms DuckDB's buffer pool and the allocator's arenas (they keep what they took,
    # ~100-200 MiB here, going up and down between queries); after that, refused queries must not add up:
    # ten of them leave memory within that band of the warm baseline instead of growing per query.
    baseline = _rss_bytes()
    for _ in range(10):
        with pytest.raises(DnstraceError, match="RESOURCE_EXHAUSTED.*exceed this collector's bound"):
            client.query(big)
    assert loaded_collector.stats()["queries_refused"] >= 11
    assert _rss_bytes() < baseline + (256 << 20)
    assert len(client.query(QuerySpec(limit=100))[1]) == 100  # and it still answers
    client.close()


def test_query_past_its_deadline_is_stopped_and_counted(loaded_collector):
    loaded_collector.query_timeout_s = 0.0001
    try:
        client = CollectorClient(loaded_collector.address, insecure=True, timeout_s=60)
        with pytest.raises(DnstraceError, match="DEADLINE_EXCEEDED"):
            client.query(QuerySpec(mode="timeseries", bucket_ns=1000, limit=100_000))
        assert loaded_collector.stats()["queries_timed_out"] >= 1
    finally:
        loaded_collector.query_timeout_s = 30.0
    assert len(client.query(QuerySpec(limit=10))[1]) == 10
    client.close()


def test_query_whose_client_goes_away_is_cancelled(loaded_collector):
    channel = grpc.insecure_channel(loaded_collector.address)
    from dnstrace.wire import dnstrace_pb2_grpc

    stub = dnstrace_pb2_grpc.CollectorStub(channel)
    spec = QuerySpec(mode="timeseries", bucket_ns=1, limit=1_000_000)
    # The client must give up while the server still works: a quarter of the time the server takes to answer
    # (here: to refuse at its size bound) on this machine, not a fixed figure that a fast machine outruns.
    started = time.monotonic()
    try:
        stub.Query(spec.to_request(dnstrace_pb2.QueryRequest), timeout=60)
    except grpc.RpcError:
        pass
    give_up_s = max(0.005, (time.monotonic() - started) / 4)
    before = loaded_collector.stats()["queries_cancelled"] + loaded_collector.stats()["queries_timed_out"]
    with pytest.raises(grpc.RpcError) as err:
        stub.Query(spec.to_request(dnstrace_pb2.QueryRequest), timeout=give_up_s)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = loaded_collector.stats()
        if stats["queries_cancelled"] + stats["queries_timed_out"] > before and stats["queries_running"] == 0:
            break
        time.sleep(0.05)
    stats = loaded_collector.stats()
    assert stats["queries_cancelled"] + stats["queries_timed_out"] > before and stats["queries_running"] == 0
    channel.close()


def test_collector_metrics_show_streams_and_queries(collector_factory):
    import urllib.request

    from collector_helpers import free_port

    metrics_port = free_port()
    collector = collector_factory(extra=["--insecure", "--metrics-addr", f"127.0.0.1:{metrics_port}"]).start()
    client = CollectorClient(collector.address, insecure=True, timeout_s=10)
    client.query(QuerySpec(limit=10))
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values["dnstrace_collector_queries_total"] == 1
    for name in ("dnstrace_collector_queries_running", "dnstrace_collector_queries_refused_total",
                 "dnstrace_collector_queries_cancelled_total", "dnstrace_collector_streams_open",
                 "dnstrace_collector_rejected_malformed_total", "dnstrace_collector_store_events_stored_total"):
        assert values[name] == 0, name
    client.close()


def test_spool_depth_evictions_and_drops_are_live_metrics_and_agent_events(tmp_path):
    import urllib.request

    from collector_helpers import free_port

    from dnstrace.pipeline.losses import LossMonitor
    from dnstrace.sinks.metrics import MetricsSink

    store = open_store("duckdb::memory:")
    transport = LocalTransport(CollectorServer(store, "unix:" + str(tmp_path / "c.sock"), insecure=True))
    transport.run_session = _paused(transport.run_session)  # nothing ships: the spool only grows
    spool = Spool(str(tmp_path / "spool"), max_bytes=128 << 10)
    shipper = Shipper(host_id="metrics-host", spool=spool, transport=transport, batch_max_events=50, boot_id="b")
    port = free_port()
    metrics = MetricsSink(f"127.0.0.1:{port}")
    metrics.watch_gauges(shipper.name, shipper.gauges)
    monitor = LossMonitor("metrics-host")
    try:
        assert monitor.check([shipper], 1) == []
        for seed in range(40):
            shipper.handle(_events(50, seed))
        events = monitor.check([shipper], 2)
        assert len(events) == 1 and events[0]["source"] == "shipper"
        assert events[0]["losses"]["spool_evicted"] == spool.stats()["evicted_events"] > 0
        metrics.handle(events)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        pending = spool.stats()["pending_events"]
        assert f'dnstrace_spool_pending_events{{sink="shipper"}} {float(pending)}' in text
        assert 'dnstrace_spool_degraded{sink="shipper"} 0.0' in text
        assert 'dnstrace_agent_lost_records_total{counter="spool_evicted",source="shipper"}' in text
    finally:
        metrics.close()
        transport.run_session.resume()
        shipper.close()
        store.close()
