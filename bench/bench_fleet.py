"""Fleet benchmark: how many agent streams one collector holds, at what rate, in how much memory; spool recovery.

    .venv/bin/python bench/bench_fleet.py                       # 1,000 streams, DuckDB, ~1 minute
    .venv/bin/python bench/bench_fleet.py --streams 2000 --batches 10 --events 200

Streams: a real ``dnstrace collector`` process (DuckDB file store); ``--procs``
processes of ``tests/collector/stream_swarm.py`` open ``--streams`` Ingest streams in
all, each sends ``--batches`` batches of ``--events`` events and then stays open, idle,
until every stream has been opened. Printed: streams held at once (the collector's
own ``streams_open`` via Health), events/s (events stored over wall time from the
first stored event to the last), Health latency while loaded, the collector's peak and
final RSS (VmHWM / VmRSS).
Spool recovery (root: needs a tmpfs): an agent spool on a 1 MiB tmpfs is filled by a
producer until writes fail, then a filler file is removed; the figure is the time from
freeing space to the first batch spooled again, and the batches dropped meanwhile
(all counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "collector"))
sys.path.insert(0, str(REPO / "tests"))

from collector_helpers import CollectorProcess  # noqa: E402


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def bench_streams(args) -> None:
    from dnstrace.wire.client import CollectorClient

    with tempfile.TemporaryDirectory() as tmp:
        collector = CollectorProcess(f"duckdb:{tmp}/fleet.duckdb").start()
        try:
            client = CollectorClient(collector.address, insecure=True, timeout_s=10)
            idle_rss = _status_kib(collector.proc.pid, "VmRSS")
            per_proc = args.streams // args.procs
            hold_s = args.hold
            procs = [subprocess.Popen([sys.executable, str(REPO / "tests/collector/stream_swarm.py"),
                                       collector.address, str(n * per_proc), str(per_proc), str(args.batches),
                                       str(args.events), str(hold_s)], stdout=subprocess.PIPE, text=True)
                     for n in range(args.procs)]
            expected = per_proc * args.procs * args.batches * args.events
            peak_open, health_ms, first_t, done_t = 0, [], None, None
            while any(p.poll() is None for p in procs):
                t0 = time.perf_counter()
                stats = client.health()["stats"]
                health_ms.append((time.perf_counter() - t0) * 1e3)
                peak_open = max(peak_open, stats["streams_open"])
                now = time.monotonic()
                stored = stats["store"]["events_stored"]
                if stored and first_t is None:
                    first_t = now
                if stored >= expected and done_t is None:
                    done_t = now
                time.sleep(0.1)
            results = [json.loads(p.communicate()[0]) for p in procs]
            stats = client.health()["stats"]
            stored = stats["store"]["events_stored"]
            span = max(0.1, (done_t or time.monotonic()) - (first_t or time.monotonic()))  # +-0.1 s polling
            print(f"streams: {args.streams} requested, {sum(r['opened'] for r in results)} opened, "
                  f"{peak_open} held at once, {sum(r['errors'] for r in results)} errors")
            print(f"events: {stored} stored of {expected} sent (duplicates acked: "
                  f"{stats['store']['batches_duplicate']}); {stored / span:,.0f} events/s at {peak_open} streams")
            print(f"health while loaded: {len(health_ms)} calls, median {statistics.median(health_ms):.1f} ms, "
                  f"max {max(health_ms):.1f} ms, 0 failed")
            print(f"collector RSS: idle {idle_rss / 1024:.0f} MiB, peak {_status_kib(collector.proc.pid, 'VmHWM') / 1024:.0f}"
                  f" MiB, after {_status_kib(collector.proc.pid, 'VmRSS') / 1024:.0f} MiB")
            client.close()
        finally:
            collector.stop()


def bench_spool_recovery() -> None:
    if os.geteuid() != 0:
        print("spool recovery: skipped (mounting a tmpfs needs root)")
        return
    from dnstrace.ship.spool import Spool, SpoolRecord
    from dnstrace.wire.codec import SCHEMA_VERSION, encode_events

    with tempfile.TemporaryDirectory() as tmp:
        mount = Path(tmp) / "tmpfs"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
        try:
            spool = Spool(str(mount / "spool"), max_bytes=64 << 20)
            payload = encode_events([{"kind": "gai", "ts": 1_700_000_000_000_000_000 + i, "name": "x" * 40}
                                     for i in range(100)])
            filler = mount / "filler"
            filler.write_bytes(b"\0" * (600 << 10))
            seq = 0
            while not spool.degraded:
                seq += 1
                spool.append(SpoolRecord(SCHEMA_VERSION, "h", "b", 1, seq, 100, payload))
            for _ in range(50):  # keep producing on the full disk
                seq += 1
                spool.append(SpoolRecord(SCHEMA_VERSION, "h", "b", 1, seq, 100, payload))
            freed = time.perf_counter()
            filler.unlink()
            while spool.degraded:
                seq += 1
                spool.append(SpoolRecord(SCHEMA_VERSION, "h", "b", 1, seq, 100, payload))
            recovered_ms = (time.perf_counter() - freed) * 1e3
            stats = spool.stats()
            print(f"spool recovery: {recovered_ms:.2f} ms from freeing space to spooling again; "
                  f"{stats['appended_batches']} batches spooled, {stats['dropped_batches']} dropped while full "
                  f"(all counted: {stats['appended_batches'] + stats['dropped_batches']} of {seq}), "
                  f"torn records {stats['torn_records']}")
            spool.close()
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds every stream stays open after sending")
    args = parser.parse_args()
    bench_streams(args)
    bench_spool_recovery()


if __name__ == "__main__":
    main()
