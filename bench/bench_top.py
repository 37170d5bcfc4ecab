"""Benchmark: the aggregator, findings engine and top view with 2,000 processes and 50,000 distinct names.

Feeds one minute of synthetic enriched events (gai/lookup/dns/syn_retry, 2,000 pids, 50k
distinct query names, 200 nameservers), then measures CPU time of one refresh (snapshot +
render 80x24, as ``top`` does every second) and of one findings evaluation, and the RSS.
Prints figures; not a test.
"""

from __future__ import annotations

import random
import resource
import time

from dnstrace.cli.top.model import TopModel
from dnstrace.cli.top.view import TopView

S = 1_000_000_000
PROCESSES = 2_000
NAMES = 50_000
EVENTS_PER_S = 2_000
SECONDS = 60


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    rng = random.Random(7)
    model = TopModel(host="bench")
    t0 = 1_700_000_000 * S
    base_rss = rss_mib()
    feed_cpu = 0.0
    total = 0
    for second in range(SECONDS):
        batch = []
        for i in range(EVENTS_PER_S):
            pid = 1000 + rng.randrange(PROCESSES)
            ts = t0 + second * S + i * (S // EVENTS_PER_S)
            common = {"ts": ts, "pid": pid, "tid": pid, "comm": f"proc{pid % 500}", "container": f"c{pid % 300}",
                      "pod": "", "namespace": "", "nameservers": ["10.0.0.2"], "resolv_options": [], "search": []}
            name = f"n{rng.randrange(NAMES)}.example"
            kind = rng.random()
            if kind < 0.45:
                batch.append({**common, "kind": "lookup", "name": name, "latency_ns": int(rng.lognormvariate(14, 2)),
                              "error": None if rng.random() > 0.05 else "EAI_AGAIN", "attempts": []})
            elif kind < 0.95:
                batch.append({**common, "kind": "dns", "qname": name, "qtype": "A", "server": f"10.0.{pid % 200}.2",
                              "answered": rng.random() > 0.02, "rcode": "NOERROR", "tc": False,
                              "latency_ns": int(rng.lognormvariate(13, 1.5)), "proto": "udp", "sport": 40000 + i})
            else:
                batch.append({**common, "kind": "syn_retry", "daddr": f"10.9.{pid % 50}.1", "dport": 443, "retry": 1})
        start = time.process_time()
        model.sinks.handle(batch)
        model.sinks.tick(t0 + (second + 1) * S)
        feed_cpu += time.process_time() - start
        total += len(batch)
    view = TopView()
    refresh_cpu = []
    for _ in range(10):
        start = time.process_time()
        snap = model.snapshot("process", "10s", full=False)  # what the live screen asks for
        view.render(snap, 80, 24)
        refresh_cpu.append(time.process_time() - start)
    container_cpu = []
    for _ in range(5):
        start = time.process_time()
        view.by = "container"
        view.render(model.snapshot("container", "1m", full=False), 80, 24)
        container_cpu.append(time.process_time() - start)
    findings_cpu = []
    for _ in range(5):
        start = time.process_time()
        found = model.findings.evaluate(t0 + SECONDS * S)
        findings_cpu.append(time.process_time() - start)
    stats = model.aggregator.stats()
    print(f"events fed: {total} over {SECONDS} s of event time ({EVENTS_PER_S}/s), {PROCESSES} processes, "
          f"{NAMES} distinct names")
    print(f"feed (aggregate + findings buffer, incl. 1 s ticks with findings evaluation): "
          f"{feed_cpu / total * 1e6:.1f} µs CPU/event, {feed_cpu:.2f} s total")
    print(f"top refresh (snapshot 10 s view + render 80x24), process rows: median "
          f"{sorted(refresh_cpu)[len(refresh_cpu) // 2] * 1e3:.1f} ms CPU, max {max(refresh_cpu) * 1e3:.1f} ms")
    print(f"top refresh, container rows (1 m view): median {sorted(container_cpu)[2] * 1e3:.1f} ms CPU")
    print(f"findings evaluation over the last minute: median {sorted(findings_cpu)[2] * 1e3:.1f} ms CPU "
          f"({len(found)} findings)")
    print(f"aggregator: {stats['processes']} process series kept, {stats['process_evictions']} evicted to 'other'; "
          f"{stats['containers']} containers; {stats['servers']} servers, {stats['server_evictions']} evicted")
    fstats = model.findings.stats()
    print(f"findings buffers (fair per process): {fstats['buffered']} events of {fstats['buffered_processes']} "
          f"process slots kept, {fstats['evicted_over_bound']} evicted over the bound")
    print(f"RSS: {rss_mib():.0f} MiB (baseline before feeding {base_rss:.0f} MiB; "
          f"max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
