"""Recorded-style events for collector tests: deterministic, every kind, per host."""

from __future__ import annotations

import random

BASE_TS = 1_700_000_000_000_000_000


def make_events(host_tag: str, count: int, start_ts: int = BASE_TS, seed: int = 0) -> list[dict]:
    """``count`` events of mixed kinds; ``host_tag`` is baked into comms and names so content is traceable."""
    rng = random.Random(f"{host_tag}-{seed}")
    events = []
    for i in range(count):
        ts = start_ts + i * 1_000_000
        pick = i % 5
        common = {"ts": ts, "pid": 1000 + i % 7, "tid": 1000 + i % 7, "comm": f"app{i % 3}",
                  "container": f"ctr-{host_tag}-{i % 2}", "pod": f"pod-{i % 2}", "namespace": "default"}
        if pick == 0:
            slow = i % 50 == 0
            events.append(dict(common, kind="gai", func="getaddrinfo", name=f"svc{i % 4}.{host_tag}.example",
                               latency_ns=5_000_000_000 if slow else rng.randint(100_000, 2_000_000),
                               error="EAI_AGAIN" if slow else None, libc="/lib/x86_64-linux-gnu/libc.so.6"))
        elif pick == 1:
            events.append(dict(common, kind="dns", qname=f"svc{i % 4}.{host_tag}.example", qtype="A",
                               server="10.0.0.2" if i % 3 else "10.0.0.9", dport=53, sport=40000 + i % 1000,
                               proto="udp", id=i % 65536, rcode="NOERROR" if i % 11 else "SERVFAIL",
                               tc=False, ancount=1, latency_ns=rng.randint(200_000, 900_000), answered=True))
        elif pick == 2:
            events.append(dict(common, kind="lookup", name=f"svc{i % 4}.{host_tag}.example",
                               latency_ns=rng.randint(300_000, 3_000_000), error=None, source="gai",
                               attempts=[{"server": "10.0.0.2", "qtype": "A", "rcode": "NOERROR"},
                                         {"server": "10.0.0.2", "qtype": "AAAA", "rcode": "NOERROR"}]))
        elif pick == 3:
            events.append(dict(common, kind="connect", saddr="10.1.0.5", sport=50000 + i % 1000, daddr="10.0.0.2",
                               dport=443, latency_ns=rng.randint(50_000, 500_000), retries=0,
                               result="established" if i % 13 else "timeout"))
        else:
            events.append(dict(common, kind="finding" if i % 20 == 4 else "drop", rule="dead_nameserver",
                               severity="critical", summary=f"nameserver 10.0.0.9 never answered ({host_tag})",
                               evidence={"unanswered": 37, "server": "10.0.0.9"}, fix="remove 10.0.0.9",
                               pids=[1000], reason="IP_RPFILTER", location="ip_rcv_finish_core",
                               saddr="10.9.0.1", daddr="10.9.0.2", count=1)
                          if i % 20 == 4 else
                          dict(common, kind="drop", reason="IP_RPFILTER", location="ip_rcv_finish_core",
                               protocol="tcp", saddr="10.9.0.1", daddr="10.9.0.2", iif=3, iif_name="eth1",
                               why="eth1 has no IPv4 address", attribution="flow", count=1))
    return events
