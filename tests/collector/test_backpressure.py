"""Back-pressure said plainly: collector /metrics shows queue depth and refusals, agents spool (bounded, counted)
while no collector takes their batches, and `dnstrace query` says when hosts are behind."""

from __future__ import annotations

import subprocess
import time
import urllib.request

from collector_helpers import DNSTRACE, free_port
from recorded import make_events

from dnstrace.ship.shipper import GrpcTransport, Shipper
from dnstrace.ship.spool import Spool
from dnstrace.wire import dnstrace_pb2
from dnstrace.wire.client import CollectorClient
from dnstrace.wire.codec import SCHEMA_VERSION, encode_events


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _batch(host: str, seq: int, events: list[dict], payload: bytes | None = None):
    return dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id=host, boot_id="boot", instance=1, seq=seq,
                              event_count=len(events), events=payload if payload is not None else encode_events(events))


def test_collector_metrics_hosts_behind_and_the_query_note(collector_factory):
    metrics_port = free_port()
    collector = collector_factory(extra=["--insecure", "--metrics", f"127.0.0.1:{metrics_port}"]).start()
    now = time.time_ns()
    fresh = make_events("fresh", 300, start_ts=now - 5 * 10**9)
    late = make_events("late", 300, start_ts=now - 20 * 60 * 10**9)  # an agent replaying its spool
    client = CollectorClient(collector.address, insecure=True)
    try:
        acks = list(client.ingest_stream(iter([_batch("fresh", 1, fresh), _batch("late", 1, late)])))
        assert [a.stored for a in acks] == [300, 300]
        refused = client.ingest_stream(iter([_batch("bad", 1, fresh[:10], payload=b"\x93garbage")]))
        try:
            list(refused)
        except Exception:
            pass
        values = _scrape(metrics_port)
        assert values["dnstrace_collector_store_events_stored_total"] == 600
        assert values["dnstrace_collector_rejected_malformed_total"] == 1
        assert values["dnstrace_collector_store_queued_events"] == 0
        assert values["dnstrace_collector_store_held_max_events"] > 0
        assert values["dnstrace_collector_store_hosts_behind_count"] == 1
        assert values["dnstrace_collector_store_up"] == 1
        behind = client.health()["stats"]["store"]["hosts_behind"]
        assert [(h["host"], h["catching_up"]) for h in behind] == [("late", True)]
    finally:
        client.close()
    out = subprocess.run(DNSTRACE + ["query", "--collector", collector.address, "--insecure", "--since", "1h",
                                     "--top", "5", "--by", "host"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "answer may be incomplete: 1 host behind: late (newest event" in out.stderr
    assert "catching up" in out.stderr and "fresh" not in out.stderr
    out = subprocess.run(DNSTRACE + ["query", "--collector", collector.address, "--insecure", "--since", "1h",
                                     "--host", "fresh"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "incomplete" not in out.stderr


def test_agent_spools_bounded_and_counted_while_no_collector_takes_batches(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 256 << 10)
    transport = GrpcTransport(f"127.0.0.1:{free_port()}", insecure=True)  # nobody listens there
    shipper = Shipper(host_id="offline", spool=spool, transport=transport, batch_max_events=200,
                      boot_id="boot", drain_timeout_s=0)
    try:
        for n in range(20):
            shipper.handle(make_events("offline", 200, seed=n))
        shipper.flush()
        stats = shipper.stats()
        assert stats["spool"]["bytes"] <= 256 << 10
        assert stats["spool"]["evicted_events"] > 0
        assert stats["spool"]["pending_events"] + stats["spool"]["evicted_events"] == 4000
        assert stats["transport"]["events_acked"] == 0
    finally:
        shipper.close()
