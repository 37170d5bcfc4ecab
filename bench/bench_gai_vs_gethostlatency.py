"""User-space CPU per traced getaddrinfo: dnstrace's gai paths against bcc's ``gethostlatency``.

Each round runs every tool on the same load, one tool at a time, in interleaved
order: ``LOOKUPS`` getaddrinfo calls on the /etc/hosts fast path (host glibc),
paced at ``--rate`` calls per second (default 100k/s; 0 = as fast as the loop
goes), stdout to a file. CPU time (utime+stime of the tool's process, every thread,
from /proc/PID/stat) is taken from when the tool is ready to after it drained, minus
what it burns idle over the same time; events are the output lines naming the
load's command (the bench agent counts all events itself; other processes on a
shared machine resolve names too). Ring-buffer reserve failures the kernel counted
during a round (for any process's call) are shown from the tool's final stats. Printed per tool: median and range over the
rounds of CPU per 100k events, events seen per round, and the ratios of medians to
gethostlatency with the goals: ``trace gai --json`` sees 100% at <= 0.3x, the
agent path (bench/_gai_agent.py: GaiSource under the Runner) <= 0.20x.
Run as root: ``.venv/bin/python bench/bench_gai_vs_gethostlatency.py [--rounds 5] [--rate 100000]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time

from _gaibench import BENCH_AGENT, DNSTRACE, Tracer, build_loop, run_loop

LOOKUPS = 100_000
LOOP_COMM = "gailoop"  # the load's command name: other processes on the machine resolve names too
GETHOSTLATENCY = "/usr/sbin/gethostlatency-bpfcc"
AGENT = "dnstrace agent (GaiSource)"
TRACE_JSON = "dnstrace trace gai --json"
TRACE_TABLE = "dnstrace trace gai (table)"
PEER = "gethostlatency (bcc)"


def measure(argv: list[str], ready_in: str, ready_text: str, loop: str, counted: bool,
            rate: int) -> tuple[float, int, str]:
    """(CPU seconds, events seen, the tool's stderr) for one round of LOOKUPS calls."""
    tracer = Tracer(argv, ready_in, ready_text)
    try:
        time.sleep(0.5)
        idle_start = tracer.cpu()
        time.sleep(2.0)
        idle_per_s = (tracer.cpu() - idle_start) / 2.0
        count = tracer.last_count if counted else (lambda: tracer.lines_with(LOOP_COMM))
        lines_before = count()
        cpu_start, t0 = tracer.cpu(), time.monotonic()
        run_loop([], loop, LOOKUPS, "localhost", rate)
        time.sleep(2.0)  # let it drain (dnstrace's slowest path is its 1 s tick)
        cpu = tracer.cpu() - cpu_start - idle_per_s * (time.monotonic() - t0)
        events = count() - lines_before
    finally:
        err = tracer.stop()
    return cpu, events, err


def tools() -> dict:
    gethostlatency = shutil.which(GETHOSTLATENCY) or shutil.which("gethostlatency-bpfcc")
    if not gethostlatency:
        raise SystemExit("gethostlatency-bpfcc not found: apt-get install bpfcc-tools")
    return {  # name: (argv, where the ready line appears, its text, events counted by the tool itself)
        AGENT: (BENCH_AGENT, "stderr", "attached", True),
        TRACE_JSON: (DNSTRACE + ["trace", "gai", "--json"], "stderr", "attached", False),
        TRACE_TABLE: (DNSTRACE + ["trace", "gai"], "stderr", "attached", False),
        PEER: (["/usr/bin/python3", gethostlatency], "stdout", "LATms", False),
    }


def run(rounds: int, rate: int) -> dict:
    """Per tool: {"per_100k": [CPU s per 100k events per round], "seen": [events per round], "notes": [...]}"""
    loop = build_loop()
    table = tools()
    results = {name: {"per_100k": [], "seen": [], "notes": []} for name in table}
    names = list(table)
    for round_no in range(rounds):
        order = names[round_no % len(names):] + names[:round_no % len(names)]  # rotate: no tool always first
        for name in order:
            argv, ready_in, ready_text, counted = table[name]
            cpu, events, err = measure(argv, ready_in, ready_text, loop, counted, rate)
            results[name]["seen"].append(events)
            results[name]["per_100k"].append(cpu / max(events, 1) * 100_000)
            results[name]["notes"] += [line for line in err.splitlines()
                                       if "ringbuf_full" in line or "output" in line]
    return results


def report(results: dict, rounds: int, rate: int) -> list[bool]:
    pace = f"paced at {rate:,}/s" if rate else "as fast as the loop goes"
    print(f"user-space CPU per 100k traced getaddrinfo calls ({LOOKUPS:,} calls per round on the /etc/hosts "
          f"path, {pace}, {rounds} interleaved rounds)")
    medians = {}
    for name, r in results.items():
        medians[name] = statistics.median(r["per_100k"])
        print(f"  {name:28s} median {medians[name]:5.3f} CPU s / 100k events  (range "
              f"{min(r['per_100k']):.3f}-{max(r['per_100k']):.3f})   events seen per round: {r['seen']}")
        for note in sorted(set(r["notes"]))[:3]:
            print(f"      stderr: {note.strip()}")
    theirs = medians[PEER]
    verdicts = []
    for name, goal in ((TRACE_JSON, 0.30), (AGENT, 0.20), (TRACE_TABLE, None)):
        ratio = medians[name] / theirs
        if goal is None:
            print(f"  ratio {name:28s} / gethostlatency = {ratio:.3f}  (no goal)")
            continue
        verdicts.append(ratio <= goal)
        print(f"  ratio {name:28s} / gethostlatency = {ratio:.3f}  (goal <= {goal:.2f}: "
              f"{'met' if ratio <= goal else 'NOT met'})")
    for name in (TRACE_JSON, TRACE_TABLE):
        complete = all(seen == LOOKUPS for seen in results[name]["seen"])
        verdicts.append(complete)
        print(f"  {name} printed all {LOOKUPS:,} of the load's calls in every round: {'yes' if complete else 'NO'}")
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=100_000, help="getaddrinfo calls per second (0: flat out)")
    args = parser.parse_args()
    verdicts = report(run(args.rounds, args.rate), args.rounds, args.rate)
    print("verdict:", "goals met" if all(verdicts) else "goals NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
