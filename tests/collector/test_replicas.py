"""Stateless collector replicas: three agents, two `dnstrace collector` processes, one real ClickHouse.

The agents know the replicas by one DNS name resolving to both (127.0.0.1 and 127.0.0.2, same port); one
replica is SIGKILLed mid-stream, its agents fail over, and every event is stored exactly once (count and
content, asked of either replica). Restarted, the replica gets its agents back.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

from collector_helpers import free_port
from recorded import BASE_TS, make_events

from dnstrace.ship.shipper import GrpcTransport, Shipper, preference, resolve_endpoints
from dnstrace.ship.spool import Spool
from dnstrace.wire.client import CollectorClient
from dnstrace.wire.query import QuerySpec

NAME = "collectors.dnstrace.test"


def _resolver(port: int):
    """The replicas' DNS name: two loopback addresses (what a headless service or round-robin record gives)."""
    def resolve(host, port_, type=0):
        assert host == NAME
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.1", "127.0.0.2")]
    return resolve


def _hosts_spread_over(endpoints, count: int) -> list[str]:
    """Agent host ids whose preferred replicas cover every replica (which one each prefers is hashed)."""
    chosen, covered = [], set()
    for n in range(1000):
        host = f"agent-{n}"
        first = preference(host, endpoints)[0].address
        if first not in covered or len(chosen) >= len(endpoints):
            chosen.append(host)
            covered.add(first)
        if len(chosen) == count and len(covered) == len(endpoints):
            return chosen
    raise AssertionError("no spread found")


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_one_replica_every_event_once_and_agents_spread_again(tmp_path, clickhouse, collector_factory):
    port = free_port()
    url = clickhouse.url_for(f"dnstrace_replicas_{uuid.uuid4().hex[:8]}")
    replicas = {ip: collector_factory(url, port=port, host=ip).start() for ip in ("127.0.0.1", "127.0.0.2")}
    resolve = _resolver(port)
    endpoints = resolve_endpoints([f"{NAME}:{port}"], resolve)
    assert [e.address for e in endpoints] == [f"127.0.0.1:{port}", f"127.0.0.2:{port}"]
    hosts = _hosts_spread_over(endpoints, 3)
    preferred = {h: preference(h, endpoints)[0].address for h in hosts}
    shippers = {}
    for host in hosts:
        transport = GrpcTransport(f"{NAME}:{port}", insecure=True, spread_key=host, failback_s=1.0, resolve=resolve)
        shippers[host] = Shipper(host_id=host, spool=Spool(str(tmp_path / f"spool-{host}"), 64 << 20),
                                 transport=transport, batch_max_events=100, batch_interval_ns=50_000_000,
                                 boot_id="boot", drain_timeout_s=30)
    sent = {h: make_events(h, 6000, start_ts=BASE_TS + i) for i, h in enumerate(hosts)}
    # The second quarter is made only once a replica is killed, so there is always something to fail over with
    # (a fast collector could otherwise store the whole first half before the kill); the second half waits for
    # the restart.
    killed = threading.Event()
    gate = {h: threading.Event() for h in hosts}

    def produce(host):
        events, shipper = sent[host], shippers[host]
        for i in range(0, len(events), 50):
            if i == len(events) // 4:
                killed.wait(120)
            if i == len(events) // 2:
                gate[host].wait(120)
            shipper.handle(events[i:i + 50])
            shipper.tick()
            time.sleep(0.005 if i < len(events) // 2 else 0.15)  # after the restart: long enough to fail back
        shipper.flush()

    threads = [threading.Thread(target=produce, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    try:
        # Everyone on its preferred replica first.
        _wait(lambda: all(s.transport.counters["collector"] == preferred[h] and
                          s.transport.counters["batches_acked"] > 3 for h, s in shippers.items()), 60,
              "agents on their preferred replicas")
        victim_address = preferred[hosts[0]]
        victim = next(r for r in replicas.values() if r.address == victim_address)
        survivor = next(r for r in replicas.values() if r is not victim)
        victim.kill()  # mid-stream: its agents keep producing
        killed.set()
        moved = [h for h in hosts if preferred[h] == victim_address]
        acked = {h: shippers[h].transport.counters["batches_acked"] for h in moved}
        _wait(lambda: all(shippers[h].transport.counters["collector"] == survivor.address and
                          shippers[h].transport.counters["batches_acked"] > acked[h] + 3 for h in moved), 60,
              "agents failing over to the surviving replica")
        assert all(shippers[h].transport.counters["failovers"] >= 1 for h in moved)

        victim.start()
        for event in gate.values():
            event.set()
        _wait(lambda: all(s.transport.counters["collector"] == preferred[h] for h, s in shippers.items()), 60,
              "agents spreading back to their preferred replicas")
        assert all(shippers[h].transport.counters["failbacks"] >= 1 for h in moved)
        for t in threads:
            t.join(120)
        for shipper in shippers.values():
            assert shipper.wait_delivered(60), shipper.stats()
        assert {s.transport.counters["collector"] for s in shippers.values()} == {r.address for r in replicas.values()}

        for replica in replicas.values():  # queries can go to either replica
            client = CollectorClient(replica.address, insecure=True)
            try:
                for host in hosts:
                    _, rows = client.query(QuerySpec(hosts=[host], limit=1_000_000))
                    assert len(rows) == len(sent[host])
                    assert rows == [dict({k: v for k, v in e.items() if v is not None}, host=host) for e in sent[host]]
                _, top = client.query(QuerySpec(mode="top", group_by="host", order_by="count"))
                assert sorted((r["host"], r["count"]) for r in top) == sorted((h, 6000) for h in hosts)
            finally:
                client.close()
    finally:
        killed.set()
        for event in gate.values():
            event.set()
        for shipper in shippers.values():
            shipper.close()
