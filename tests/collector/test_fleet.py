"""Several shippers (fed recorded events) stream to one `dnstrace collector` process over gRPC."""

from __future__ import annotations

import json
import subprocess
import threading
import time

from collector_helpers import DNSTRACE
from recorded import BASE_TS, make_events

from dnstrace.ship.shipper import GrpcTransport, Shipper
from dnstrace.ship.spool import Spool
from dnstrace.wire.client import CollectorClient
from dnstrace.wire.query import QuerySpec

HOSTS = ("host-1", "host-2", "host-3")


def _shipper(tmp_path, host, address, batch=250):
    spool = Spool(str(tmp_path / f"spool-{host}"), 64 << 20)
    transport = GrpcTransport(address, insecure=True)
    return Shipper(host_id=host, spool=spool, transport=transport, batch_max_events=batch,
                   batch_interval_ns=50_000_000, boot_id="test-boot", drain_timeout_s=20)


def _stored(client, host=None):
    spec = QuerySpec(hosts=[host] if host else [], limit=1_000_000)
    return client.query(spec)[1]


def _norm(event):
    return {k: v for k, v in event.items() if v is not None}


def test_three_hosts_merge_into_one_collector(tmp_path, collector_factory):
    collector = collector_factory().start()
    shippers = [_shipper(tmp_path, host, collector.address) for host in HOSTS]
    sent = {}
    for h, (host, shipper) in enumerate(zip(HOSTS, shippers, strict=False)):
        events = make_events(host, 1000 + 100 * h, start_ts=BASE_TS + h)
        sent[host] = events
        shipper.handle(events)
        shipper.flush()
    for shipper in shippers:
        assert shipper.wait_delivered(30), shipper.stats()
        shipper.close()
    client = CollectorClient(collector.address, insecure=True)
    try:
        for host in HOSTS:
            rows = _stored(client, host)
            assert rows == [dict(_norm(e), host=host) for e in sent[host]]
        _, top = client.query(QuerySpec(mode="top", group_by="host", order_by="count"))
        assert [(r["host"], r["count"]) for r in top] == [("host-3", 1200), ("host-2", 1100), ("host-1", 1000)]
        _, findings = client.query(QuerySpec(mode="findings"))
        assert findings[0]["host_list"] == list(HOSTS)
        health = client.health()
        assert health["stats"]["store"]["events_stored"] == 3300
    finally:
        client.close()

    # The CLI answers the example query with the agent's field names.
    out = subprocess.run(DNSTRACE + ["query", "--collector", collector.address, "--insecure", "--since",
                                     f"@{BASE_TS / 1e9 - 1}", "--kind", "gai", "--pid", "1000",
                                     "--min-latency", "1s", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    expected = [e for host in HOSTS for e in sent[host]
                if e["kind"] == "gai" and e["pid"] == 1000 and e["latency_ns"] >= 1_000_000_000]
    assert expected and len(rows) == len(expected)
    assert all(set(r) >= {"kind", "ts", "host", "pid", "comm", "latency_ns", "name", "func", "libc"} for r in rows)


def test_collector_sigkill_mid_stream_loses_and_duplicates_nothing(tmp_path, collector_factory):
    collector = collector_factory().start()
    shippers = [_shipper(tmp_path, host, collector.address, batch=100) for host in HOSTS]
    sent = {host: make_events(host, 3000, start_ts=BASE_TS + h) for h, host in enumerate(HOSTS)}
    killed = threading.Event()

    def produce(host, shipper):
        events = sent[host]
        for i in range(0, len(events), 50):
            shipper.handle(events[i:i + 50])
            shipper.tick()
            time.sleep(0.01)
        shipper.flush()

    threads = [threading.Thread(target=produce, args=(h, s)) for h, s in zip(HOSTS, shippers, strict=False)]
    for t in threads:
        t.start()
    # Kill once every agent has delivered something, while they keep producing.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(s.transport.counters["batches_acked"] > 3 for s in shippers):
        time.sleep(0.02)
    collector.kill()
    killed.set()
    acked_before = [s.transport.counters["events_acked"] for s in shippers]
    time.sleep(1.0)  # agents keep producing into their spools
    assert any(s.spool.pending()[0] > 0 for s in shippers)
    collector.start()
    for t in threads:
        t.join(60)
    for shipper in shippers:
        assert shipper.wait_delivered(60), shipper.stats()
    client = CollectorClient(collector.address, insecure=True)
    try:
        for host in HOSTS:
            rows = _stored(client, host)
            assert len(rows) == len(sent[host])
            assert rows == [dict(_norm(e), host=host) for e in sent[host]]
    finally:
        client.close()
    assert all(a < 9000 for a in acked_before)
    assert sum(s.transport.counters["errors"] for s in shippers) >= len(HOSTS)
    for shipper in shippers:
        shipper.close()
