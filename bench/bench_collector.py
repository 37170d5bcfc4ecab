"""Collector benchmark: ingest events/s from 1 and N agent processes, incident-query latency over a big store.

Prints figures for DuckDB and (when clickhouse-server is installed) ClickHouse:

    .venv/bin/python bench/bench_collector.py                   # defaults: a few minutes
    .venv/bin/python bench/bench_collector.py --events 1000000 --query-events 10000000 --stores duckdb

Ingest: a real ``dnstrace collector`` process; each agent process replays pre-encoded
msgpack columnar batches (encoding is the agents' CPU, not the collector's) over one
gRPC Ingest stream with the shipper's window of batches in flight. Throughput is events
acknowledged (stored) per wall-clock second, first send to last ack; each configuration
runs ``--ingest-runs`` times on a fresh store and the median is the figure, because run
to run this 2-core VM varies by +-15%.
Queries: the store is filled with synthetic events by SQL (no Python per row), then
the collector serves incident queries over gRPC; latency is measured at the client.
Fleet (``--fleet-*``): a two-shard ReplicatedMergeTree ClickHouse cluster with one
ZooKeeper, collector replicas in front of it and simulated agents (real shipper and
spool, pre-encoded batches offered at a fixed rate): end-to-end events/s, CPU, and how
deep the agents' spools get when the collectors cannot keep up.
Summary (``--summary-*``): what one node's shipper makes in a simulated hour of a
healthy mix with ``agent.ship = all`` and ``summary``: events and bytes.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "collector"))
sys.path.insert(0, str(REPO / "tests"))

HOUR_NS = 3600 * 10**9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_collector(store_url: str) -> tuple[subprocess.Popen, str]:
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "dnstrace", "collector", "--listen", address, "--store", store_url,
                             "--insecure", "--retention", "3650d"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    said = b""
    while True:
        line = proc.stderr.readline()
        if b"collector listening" in line:
            return proc, address
        said += line
        if not line:
            raise SystemExit(f"collector did not start: {said.decode(errors='replace')}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def agent_main(address: str, host: str, events: int, batch: int, ready, go, result) -> None:
    from recorded import make_events

    from dnstrace.wire import dnstrace_pb2
    from dnstrace.wire.client import CollectorClient
    from dnstrace.wire.codec import SCHEMA_VERSION, encode_events

    template = make_events(host, batch)
    payload = encode_events(template)  # same bytes each time: the collector still decodes and stores every one
    batches = [dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id=host, boot_id="bench", instance=1, seq=s + 1,
                                  event_count=batch, events=payload) for s in range(events // batch)]
    client = CollectorClient(address, insecure=True, timeout_s=600)
    ready.set()
    go.wait()
    import threading

    from dnstrace.wire.codec import STREAM_WINDOW_BATCHES, STREAM_WINDOW_BYTES

    # The shipper's flow control: at most this many batches, and bytes, unacknowledged.
    batches_room = threading.Semaphore(min(STREAM_WINDOW_BATCHES, max(1, STREAM_WINDOW_BYTES // len(payload))))

    def requests():
        for b in batches:
            batches_room.acquire()
            yield b

    started = time.perf_counter()
    stored = 0
    for ack in client.ingest_stream(requests()):
        stored += ack.stored
        batches_room.release()
    result.put((host, stored, started, time.perf_counter()))
    client.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bench_ingest(store_url: str, agents: int, events_per_agent: int, batch: int,
                 server_pid: int | None = None) -> tuple[float, float, float, float]:
    """(events/s, collector CPU s per 1M events with start-up, collector peak RSS MiB, server CPU s per 1M)."""
    proc, address = start_collector(store_url)
    server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
    try:
        ctx = mp.get_context("spawn")
        go, result = ctx.Event(), ctx.Queue()
        readies, procs = [], []
        for a in range(agents):
            ready = ctx.Event()
            p = ctx.Process(target=agent_main, args=(address, f"bench-{a}", events_per_agent, batch, ready, go, result))
            p.start()
            readies.append(ready)
            procs.append(p)
        for ready in readies:
            ready.wait(120)
        go.set()
        results = [result.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(30)
        total = sum(r[1] for r in results)
        if total != agents * events_per_agent:
            raise SystemExit(f"the collector stored {total:,} of {agents * events_per_agent:,} events")
        wall = max(r[3] for r in results) - min(r[2] for r in results)
        if server_pid:
            settle_clickhouse(store_url)
            server_cpu = cpu_seconds(server_pid) - server_cpu
        return (total / wall, cpu_seconds(proc.pid) / (total / 1e6), peak_rss_mib(proc.pid),
                server_cpu / (total / 1e6))
    finally:
        stop(proc)


def settle_clickhouse(store_url: str, timeout_s: float = 120.0) -> None:
    """Wait for the background merges of the run's database to finish (the server CPU of a run includes the
    merges of what it inserted), then drop it: the next run neither pays for this one's merges nor its disk."""
    from urllib.parse import urlparse

    from clickhouse_driver import Client

    url = urlparse(store_url)
    database = url.path.strip("/")
    client = Client(url.hostname, port=url.port)
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 5:  # a second without merges: the server picks merges a moment after parts arrive
        merging = client.execute("SELECT count() FROM system.merges WHERE database = %(db)s", {"db": database})[0][0]
        quiet = 0 if merging else quiet + 1
        if time.monotonic() > deadline:
            print(f"  (merges in {database} still running after {timeout_s:.0f}s)", flush=True)
            break
        time.sleep(0.2)
    client.execute(f"DROP DATABASE IF EXISTS {database}")
    client.disconnect()


# --- query store fill (SQL generates the rows) -----------------------------------------------------------------
DUCK_FILL = """
INSERT INTO events SELECT
  $t0 + i * $step AS ts, 'host-' || (i % 50) AS host,
  CASE i % 5 WHEN 0 THEN 'gai' WHEN 1 THEN 'dns' WHEN 2 THEN 'lookup' WHEN 3 THEN 'connect' ELSE 'drop' END AS kind,
  1000 + (i * 7919) % 5000 AS pid, 1000 + (i * 7919) % 5000 AS tid, 'app' || (i % 40) AS comm,
  'ctr-' || (i % 200) AS container, 'pod-' || (i % 200) AS pod, 'default' AS namespace,
  CASE WHEN i % 5 IN (0, 2) THEN 'svc' || (i % 1000) || '.example' END AS name,
  CASE WHEN i % 5 = 1 THEN 'svc' || (i % 1000) || '.example' END AS qname,
  CASE WHEN i % 5 = 1 THEN 'A' END AS qtype,
  CASE WHEN i % 5 = 1 THEN '10.0.0.' || (i % 4) END AS server,
  CASE WHEN i % 5 <> 4 THEN (hash(i) % 5000000)::BIGINT + CASE WHEN i % 997 = 0 THEN 5000000000 ELSE 0 END END,
  CASE WHEN i % 997 = 0 THEN 'EAI_AGAIN' END AS error,
  CASE WHEN i % 5 = 1 THEN CASE WHEN i % 101 = 0 THEN 'SERVFAIL' ELSE 'NOERROR' END END AS rcode,
  CASE WHEN i % 5 = 4 THEN 'IP_RPFILTER' END AS reason,
  CASE WHEN i % 5 = 3 THEN '10.1.' || (i % 250) || '.1' END AS daddr,
  CASE WHEN i % 5 = 3 THEN 443 END AS dport,
  CASE WHEN i % 100003 = 0 THEN 'dead_nameserver' END AS rule, NULL AS severity,
  (i % 997 = 0 OR i % 5 = 4 OR (i % 5 = 1 AND i % 101 = 0)) AS failed,
  CASE WHEN i % 5 = 2 THEN '{"source":"gai","attempts":[{"server":"10.0.0.2","qtype":"A"}]}' END AS attrs
FROM range($n) t(i)
"""

CH_FILL = """
INSERT INTO events (ts, host, kind, pid, tid, comm, container, pod, namespace, name, qname, qtype, server, latency_ns,
  error, rcode, reason, daddr, dport, rule, severity, failed, attrs, boot_id, instance, seq)
SELECT toInt64({t0} + number * {step}), concat('host-', toString(number % 50)),
  multiIf(number % 5 = 0, 'gai', number % 5 = 1, 'dns', number % 5 = 2, 'lookup', number % 5 = 3, 'connect', 'drop'),
  toInt64(1000 + (number * 7919) % 5000), toInt64(1000 + (number * 7919) % 5000), concat('app', toString(number % 40)),
  concat('ctr-', toString(number % 200)), concat('pod-', toString(number % 200)), 'default',
  if(number % 5 IN (0, 2), concat('svc', toString(number % 1000), '.example'), NULL),
  if(number % 5 = 1, concat('svc', toString(number % 1000), '.example'), NULL),
  if(number % 5 = 1, 'A', NULL), if(number % 5 = 1, concat('10.0.0.', toString(number % 4)), NULL),
  if(number % 5 != 4, toInt64(cityHash64(number) % 5000000) + if(number % 997 = 0, 5000000000, 0), NULL),
  if(number % 997 = 0, 'EAI_AGAIN', NULL),
  if(number % 5 = 1, if(number % 101 = 0, 'SERVFAIL', 'NOERROR'), NULL),
  if(number % 5 = 4, 'IP_RPFILTER', NULL),
  if(number % 5 = 3, concat('10.1.', toString(number % 250), '.1'), NULL),
  if(number % 5 = 3, toInt64(443), NULL),
  if(number % 100003 = 0, 'dead_nameserver', NULL), NULL,
  toUInt8(number % 997 = 0 OR number % 5 = 4 OR (number % 5 = 1 AND number % 101 = 0)),
  if(number % 5 = 2, '{{"source":"gai"}}', NULL), 'fill', 1, 1
FROM numbers({n})
"""


def incident_queries(now_ns: int):
    from dnstrace.wire.query import QuerySpec

    since_10m, since_1h = now_ns - 600 * 10**9, now_ns - HOUR_NS
    return {
        "gai pid 4711 >=1s last 10m (events)": QuerySpec(since_ns=since_10m, kinds=["gai"], pids=[4711],
                                                         min_latency_ns=10**9),
        "slow lookups last 10m (events, 100)": QuerySpec(since_ns=since_10m, kinds=["gai"], min_latency_ns=10**9,
                                                         limit=100),
        "top 10 comm by p99, lookups 1h": QuerySpec(mode="top", since_ns=since_1h, kinds=["lookup"], limit=10),
        "dns failures by server 1h": QuerySpec(mode="top", since_ns=since_1h, kinds=["dns"], failed_only=True,
                                               group_by="server", order_by="failures"),
        "per-host breakdown gai 10m": QuerySpec(mode="top", since_ns=since_10m, kinds=["gai"], group_by="host",
                                                limit=50),
        "dns 1m buckets 1h": QuerySpec(mode="timeseries", since_ns=since_1h, kinds=["dns"], bucket_ns=60 * 10**9),
        "name glob svc12* 10m": QuerySpec(since_ns=since_10m, name_glob="svc12*.example", limit=100),
        "findings fleet-wide": QuerySpec(mode="findings", since_ns=since_1h),
    }


def bench_queries(store_url: str, n: int, repeats: int) -> dict[str, list[float]]:
    from dnstrace.collector.store.from_url import open_store
    from dnstrace.wire.client import CollectorClient

    now_ns = time.time_ns()
    t0 = now_ns - HOUR_NS
    step = HOUR_NS // n
    store = open_store(store_url)
    started = time.perf_counter()
    if store.kind == "duckdb":
        store._con.execute(DUCK_FILL, {"t0": t0, "step": step, "n": n})
    else:
        store._client.execute("TRUNCATE TABLE events")
        chunk = 2_000_000
        for first in range(0, n, chunk):
            store._client.execute(CH_FILL.format(t0=t0 + first * step, step=step, n=min(chunk, n - first)))
    fill_s = time.perf_counter() - started
    started = time.perf_counter()
    store.rebuild_rollups()  # the SQL fill bypassed ingest, which is where rollups are normally written
    rollup_s = time.perf_counter() - started
    stored = store.count()
    store.close()
    print(f"  filled {stored:,} events in {fill_s:.1f}s (rollups rebuilt in {rollup_s:.1f}s)", flush=True)
    proc, address = start_collector(store_url)
    timings: dict[str, list[float]] = {}
    try:
        client = CollectorClient(address, insecure=True, timeout_s=120)
        for name, spec in incident_queries(now_ns).items():
            client.query(spec)  # warm
            samples = []
            for _ in range(repeats):
                t = time.perf_counter()
                client.query(spec)
                samples.append((time.perf_counter() - t) * 1e3)
            timings[name] = samples
        client.close()
    finally:
        stop(proc)
    return timings


# --- summary vs all: what one node ships in an hour of a healthy, realistic mix -------------------------------------
def realistic_hour(rate: int, seconds: int, seed: int = 1):
    """Per simulated second, a list of events: mostly healthy lookups, a few failures, slow, truncated, drops."""
    import random

    rng = random.Random(seed)
    comms = [f"svc{i}" for i in range(20)]
    names = [f"api{i}.prod.svc.cluster.local" for i in range(300)] + [f"cdn{i}.example.com" for i in range(200)]
    t0 = 1_700_000_000 * 10**9
    for second in range(seconds):
        events = []
        for n in range(rate):
            ts = t0 + second * 10**9 + n * (10**9 // rate)
            pick = rng.random()
            comm = rng.choice(comms)
            common = {"ts": ts, "pid": 1000 + comms.index(comm), "tid": 1000 + comms.index(comm), "comm": comm,
                      "container": f"ctr-{comm}", "pod": f"{comm}-7d9f-{comms.index(comm) % 3}",
                      "namespace": "prod"}
            latency = int(rng.lognormvariate(13.8, 0.8))  # ~1 ms median
            slow = rng.random() < 0.002
            if slow:
                latency = int(rng.uniform(0.2, 5.0) * 1e9)
            name = rng.choice(names)
            if pick < 0.4:
                rcode = "NXDOMAIN" if rng.random() < 0.004 else ("SERVFAIL" if rng.random() < 0.001 else "NOERROR")
                events.append(dict(common, kind="dns", qname=name, qtype=rng.choice(("A", "AAAA")),
                                   server=rng.choice(("10.96.0.10", "10.96.0.11")), dport=53,
                                   sport=rng.randint(32768, 60999), proto="udp", id=rng.randint(0, 65535),
                                   rcode=rcode, tc=rng.random() < 0.0005, ancount=1, latency_ns=latency,
                                   answered=True, retransmit=rng.random() < 0.001))
            elif pick < 0.65:
                events.append(dict(common, kind="gai", func="getaddrinfo", name=name, latency_ns=latency,
                                   error="EAI_AGAIN" if slow and rng.random() < 0.5 else None,
                                   libc="/lib/x86_64-linux-gnu/libc.so.6"))
            elif pick < 0.9:
                events.append(dict(common, kind="lookup", name=name, latency_ns=latency, source="gai",
                                   attempts=[{"server": "10.96.0.10", "qtype": "A", "rcode": "NOERROR"},
                                             {"server": "10.96.0.10", "qtype": "AAAA", "rcode": "NOERROR"}]))
            elif pick < 0.9995:
                events.append(dict(common, kind="connect", saddr="10.1.0.5", sport=rng.randint(32768, 60999),
                                   daddr=f"10.2.{rng.randint(0, 20)}.{rng.randint(1, 254)}", dport=443,
                                   latency_ns=latency // 4, retries=1 if rng.random() < 0.001 else 0,
                                   result="established" if rng.random() > 0.001 else "timeout"))
            else:
                events.append(dict(common, kind="drop", reason="IP_RPFILTER", location="ip_rcv_finish_core",
                                   protocol="tcp", saddr="10.9.0.1", daddr="10.9.0.2", count=1))
        yield events


class _Idle:
    """A transport that never delivers: the spool keeps what the shipper made, which is what is measured."""

    def run_session(self, spool, stop):
        stop.wait(3600)
        return False

    def interrupt(self):
        pass

    def stats(self):
        return {}

    def close(self):
        pass


def bench_summary(rate: int, seconds: int, workdir: Path) -> dict[str, dict]:
    """Events and bytes one node's shipper makes over ``seconds`` of simulated time, per mode."""
    from dnstrace.ship.shipper import Shipper
    from dnstrace.ship.spool import Spool
    from dnstrace.ship.summary import Summarizer

    out = {}
    for mode in ("all", "summary"):
        clock = [0]
        shipper = Shipper(host_id="node", spool=Spool(str(workdir / f"spool-{mode}"), 8 << 30), transport=_Idle(),
                          batch_max_events=5000, batch_interval_ns=10**9, drain_timeout_s=0,
                          summary=Summarizer(100_000_000, 100) if mode == "summary" else None,
                          summary_interval_ns=60 * 10**9, clock=lambda: clock[0])  # noqa: B023 (called inside this iteration)
        cpu = time.process_time()
        for second, events in enumerate(realistic_hour(rate, seconds)):
            clock[0] = second * 10**9
            shipper.handle(events)
            shipper.tick()
        clock[0] = seconds * 10**9
        shipper.flush()
        stats = shipper.stats()
        stats["cpu_s"] = time.process_time() - cpu
        stats["events_shipped"] = shipper.spool.pending()[1]
        out[mode] = stats
        shipper.close()
    return out


# --- fleet: replicas x agents into a ClickHouse cluster ---------------------------------------------------------
def fleet_agent_main(addresses: str, host: str, spool_dir: str, rate: int, seconds: float, batch: int,
                     go, result) -> None:
    """One simulated agent: spools pre-encoded batches at ``rate`` events/s; the real shipper sends them."""
    import threading

    from recorded import make_events

    from dnstrace.ship.shipper import GrpcTransport, Shipper
    from dnstrace.ship.spool import Spool, SpoolRecord
    from dnstrace.wire.codec import SCHEMA_VERSION, encode_events

    payload = encode_events(make_events(host, batch))
    shipper = Shipper(host_id=host, spool=Spool(spool_dir, 4 << 30), boot_id="bench", drain_timeout_s=0,
                      transport=GrpcTransport(addresses, insecure=True, spread_key=host, failback_s=30))
    depth = {"max": 0, "samples": []}

    def sample(stop):
        while not stop.wait(0.25):
            pending = shipper.spool.pending()[1]
            depth["max"] = max(depth["max"], pending)
            depth["samples"].append(pending)

    go.wait()
    stop = threading.Event()
    threading.Thread(target=sample, args=(stop,), daemon=True).start()
    started = time.perf_counter()
    batches = int(rate * seconds) // batch
    for seq in range(1, batches + 1):
        due = started + (seq - 1) * batch / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        shipper.spool.append(SpoolRecord(SCHEMA_VERSION, host, "bench", shipper.instance, seq, batch, payload))
    delivered = shipper.wait_delivered(600)
    finished = time.perf_counter()
    stop.set()
    counters = shipper.transport.stats()
    result.put((host, counters["events_acked"], started, finished, depth["max"],
                statistics.mean(depth["samples"]) if depth["samples"] else 0, delivered, counters["collector"]))
    shipper.close()


def bench_fleet(workdir: Path, replicas: int, agents: int, rate: int, seconds: float, batch: int) -> dict:
    from collector_helpers import ClickHouseCluster

    cluster = ClickHouseCluster(workdir / "cluster").start()
    procs = []
    try:
        url = cluster.url_for("bench_fleet")
        from dnstrace.collector.store.from_url import open_store

        open_store(url).close()  # create the schema once, before the replicas race to
        collectors = [start_collector(url) for _ in range(replicas)]
        procs = [p for p, _ in collectors]
        addresses = ",".join(a for _, a in collectors)
        server_cpu = [cpu_seconds(n.proc.pid) for n in cluster.nodes]
        ctx = mp.get_context("spawn")
        go, result = ctx.Event(), ctx.Queue()
        agents_procs = [ctx.Process(target=fleet_agent_main, args=(addresses, f"fleet-{a}", str(workdir / f"spool{a}"),
                                                                    rate // agents, seconds, batch, go, result))
                        for a in range(agents)]
        for p in agents_procs:
            p.start()
        time.sleep(3)  # agents importing
        go.set()
        results = [result.get(timeout=900) for _ in agents_procs]
        for p in agents_procs:
            p.join(30)
        total = sum(r[1] for r in results)
        wall = max(r[3] for r in results) - min(r[2] for r in results)
        stored = open_store(url)
        try:
            in_store = stored.count()
        finally:
            stored.close()
        return {"events": total, "in_store": in_store, "wall": wall, "rate": total / wall,
                "collector_cpu": sum(cpu_seconds(p.pid) for p in procs) / (total / 1e6),
                "server_cpu": sum(cpu_seconds(n.proc.pid) - c
                                  for n, c in zip(cluster.nodes, server_cpu, strict=False)) / (total / 1e6),
                "spool_max": max(r[4] for r in results), "spool_mean": statistics.mean(r[5] for r in results),
                "all_delivered": all(r[6] for r in results),
                "spread": sorted(collections.Counter(r[7] for r in results).values())}
    finally:
        for p in procs:
            stop(p)
        cluster.stop()


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def start_clickhouse(directory: Path):
    from collector_helpers import ClickHouseServer

    return ClickHouseServer(directory).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3_000_000,
                        help="events per ingest run, split over the agents (long enough to reach steady state)")
    parser.add_argument("--clickhouse-events", type=int, default=2_000_000,
                        help="events per ingest run on ClickHouse")
    parser.add_argument("--ingest-runs", type=int, default=3,
                        help="ingest runs per configuration; the median is the figure (this VM is noisy)")
    parser.add_argument("--batch", type=int, default=5000, help="events per batch")
    parser.add_argument("--agents", type=int, default=4, help="agent processes for the multi-agent run")
    parser.add_argument("--query-events", type=int, default=10_000_000, help="events stored for the query run")
    parser.add_argument("--repeats", type=int, default=20, help="runs per query")
    parser.add_argument("--stores", default="duckdb,clickhouse")
    parser.add_argument("--ingest-only", action="store_true", help="skip the query-latency run")
    parser.add_argument("--summary-rate", type=int, default=200,
                        help="events/s of the simulated node for the summary-vs-all volume run (0 = skip)")
    parser.add_argument("--summary-minutes", type=int, default=60, help="simulated minutes of that run")
    parser.add_argument("--fleet-rate", type=int, default=300_000,
                        help="events/s offered by all simulated agents together in the cluster run (0 = skip)")
    parser.add_argument("--fleet-seconds", type=float, default=15, help="how long the agents offer that rate")
    parser.add_argument("--fleet-agents", type=int, default=8)
    parser.add_argument("--fleet-replicas", type=int, default=2)
    args = parser.parse_args()

    from dnstrace import log

    log.configure("console", "warning")
    print(f"machine: {os.cpu_count()} cpus; batch {args.batch} events; python {sys.version.split()[0]}")
    workdir = Path(tempfile.mkdtemp(prefix="dnstrace-bench-"))
    clickhouse = None
    try:
        if args.summary_rate:
            volume = bench_summary(args.summary_rate, args.summary_minutes * 60, workdir)
            per_hour = 60 / args.summary_minutes
            print(f"== agent.ship: one node, {args.summary_rate} events/s healthy mix, {args.summary_minutes} min "
                  f"simulated (figures per node-hour)")
            for mode, st in volume.items():
                extra = ""
                if mode == "summary":
                    sm = st["summary"]
                    extra = (f"; raw {sm['events_raw'] * per_hour:,.0f} + sample {sm['events_sampled'] * per_hour:,.0f}"
                             f", {sm['rollup_rows'] * per_hour:,.0f} rollup rows standing for "
                             f"{sm['events_summarized'] * per_hour:,.0f} events")
                print(f"  {mode:8s} events shipped {st['events_shipped'] * per_hour:12,.0f}  bytes "
                      f"{st['bytes_spooled'] * per_hour / 2**20:9.1f} MiB  batches {st['batches_made'] * per_hour:7,.0f}  "
                      f"agent CPU {st['cpu_s'] * per_hour:.1f} s{extra}")
            cut = volume["all"]["bytes_spooled"] / max(1, volume["summary"]["bytes_spooled"])
            print(f"  summary ships {cut:.1f}x fewer bytes and "
                  f"{volume['all']['events_shipped'] / max(1, volume['summary']['events_shipped']):.1f}x fewer raw events",
                  flush=True)
        if args.fleet_rate and os.path.exists("/usr/share/java/zookeeper.jar"):
            f = bench_fleet(workdir, args.fleet_replicas, args.fleet_agents, args.fleet_rate, args.fleet_seconds,
                            args.batch)
            print(f"== fleet: {args.fleet_replicas} collector replicas x {args.fleet_agents} agents -> ClickHouse "
                  f"cluster (2 shards, ReplicatedMergeTree, 1 ZooKeeper), {args.fleet_rate:,} events/s offered "
                  f"for {args.fleet_seconds:.0f}s")
            print(f"  delivered {f['events']:,} events ({f['in_store']:,} in the store) in {f['wall']:.1f}s: "
                  f"{f['rate']:,.0f} events/s end to end; collector CPU {f['collector_cpu']:.2f} s per 1M events "
                  f"(both replicas), clickhouse-server CPU {f['server_cpu']:.2f} s per 1M (both shards); agent spool "
                  f"depth max {f['spool_max']:,} events, mean {f['spool_mean']:,.0f}; agents per replica {f['spread']}"
                  + ("" if f["all_delivered"] else "; NOT everything delivered"), flush=True)
        for store_name in filter(None, args.stores.split(",")):
            if store_name == "clickhouse":
                if not shutil.which("clickhouse-server") and not os.path.exists("/usr/sbin/clickhouse-server"):
                    print("clickhouse: skipped (clickhouse-server not installed)")
                    continue
                clickhouse = start_clickhouse(workdir / "ch")
                make_url = lambda tag: clickhouse.url_for(f"bench_{tag}")  # noqa: E731, B023 (used inside this iteration)
            else:
                make_url = lambda tag: f"duckdb:{workdir}/{tag}.duckdb"  # noqa: E731
            print(f"== {store_name}")
            for agents in sorted({1, args.agents}):
                events = args.clickhouse_events if store_name == "clickhouse" else args.events
                per_agent = events // agents // args.batch * args.batch
                runs = [bench_ingest(make_url(f"ingest{agents}_{run}"), agents, per_agent, args.batch,
                                     clickhouse.proc.pid if clickhouse else None)
                        for run in range(args.ingest_runs)]
                rates = sorted(r[0] for r in runs)
                print(f"  ingest, {agents} agent process{'es' if agents > 1 else ''}: "
                      f"{statistics.median(rates):,.0f} events/s median of {len(runs)} "
                      f"(range {rates[0]:,.0f}-{rates[-1]:,.0f}; {per_agent * agents:,} events each; collector CPU "
                      f"{statistics.median(r[1] for r in runs):.2f} s per 1M events, "
                      f"peak RSS {max(r[2] for r in runs):.0f} MiB"
                      + (f"; clickhouse-server CPU {statistics.median(r[3] for r in runs):.2f} s per 1M events "
                         f"with its merges"
                         if clickhouse else "") + ")", flush=True)
            if not args.ingest_only:
                timings = bench_queries(make_url("query"), args.query_events, args.repeats)
                every = []
                for name, samples in timings.items():
                    every += samples
                    print(f"  query {name:40s} p50 {statistics.median(samples):7.1f} ms  p95 {p95(samples):7.1f} ms")
                print(f"  all incident queries over {args.query_events:,} events: p95 {p95(every):.1f} ms")
            if clickhouse:
                clickhouse.stop()
                clickhouse = None
    finally:
        if clickhouse:
            clickhouse.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
