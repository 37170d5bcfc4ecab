"""Throughput of the lookups join (``LookupJoiner``) on a recorded-shape DNS flood, in events/s.

Prints figures for the plain join and for the join with resolver models and node-local
cache lookups (``chains.LocalServerFinder``; the flood's pids are this process and a few
absent ones, so /proc is really read). No assertion: speed is reported, not tested.

    .venv/bin/python bench/bench_lookups_join.py [events]
"""

from __future__ import annotations

import os
import sys
import time

from dnstrace.enrich.chains import LocalServerFinder
from dnstrace.enrich.resolver_models import ModelRegistry
from dnstrace.signals.lookups.source import LookupJoiner

S = 1_000_000_000


def flood(n: int) -> list[dict]:
    pids = [os.getpid(), 999_991, 999_992, 999_993]
    t0 = time.time_ns()
    return [{"kind": "dns", "ts": t0 + i * 10_000, "pid": pids[i % 4], "tid": pids[i % 4], "comm": "sender",
             "qname": f"flood{i % 50}.example.test", "qtype": "A", "server": "127.0.0.1", "dport": 53,
             "sport": 40000 + i % 1000, "id": i & 0xFFFF, "proto": "udp", "answered": True, "rcode": "NOERROR",
             "latency_ns": 50_000, "ancount": 1, "tc": False, "retransmit": False, "same_port_pair": False,
             "tcp_fallback": False, "ns_index": 0, "answers": []} for i in range(n)]


def run(joiner: LookupJoiner, events: list[dict]) -> tuple[float, int]:
    started = time.perf_counter()
    now = events[0]["ts"]
    lookups = 0
    for i, event in enumerate(events):
        joiner.add(event, event["ts"])
        if i % 10_000 == 0:
            now = event["ts"]
            lookups += len(joiner.flush(now + 2 * S))
    lookups += len(joiner.flush(events[-1]["ts"] + 60 * S))
    return time.perf_counter() - started, lookups


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    events = flood(n)
    plain = LookupJoiner()
    elapsed, lookups = run(plain, events)
    print(f"join, no models/chains:         {n / elapsed:10.0f} events/s  ({lookups} lookups)")
    full = LookupJoiner(models=ModelRegistry(), local_servers=LocalServerFinder())
    elapsed, lookups = run(full, flood(n))
    print(f"join + resolver models + chains: {n / elapsed:10.0f} events/s  ({lookups} lookups, "
          f"{full.local_servers.counters['local_server_scans']} /proc scans)")


if __name__ == "__main__":
    main()
