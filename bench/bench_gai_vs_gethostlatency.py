"""Agent CPU per 100k traced lookups: ``dnstrace trace gai`` against bcc's ``gethostlatency``.

Both tools trace the same load (a tight getaddrinfo loop on the /etc/hosts fast
path, host glibc) one after the other, stdout to a file. CPU time (utime+stime of
the tool's process, from /proc/PID/stat) is taken from when the tool is ready to
after it drained, minus what it burns idle over the same time; events are counted
from its output lines. Goal: dnstrace <= 1/5 of gethostlatency.
Run as root: ``.venv/bin/python bench/bench_gai_vs_gethostlatency.py``.
"""

from __future__ import annotations

import shutil
import sys
import time

from _gaibench import BENCH_AGENT, DNSTRACE, Tracer, build_loop, run_loop

LOOKUPS = 100_000
ROUNDS = 3
GETHOSTLATENCY = "/usr/sbin/gethostlatency-bpfcc"


def measure(argv: list[str], ready_in: str, ready_text: str, loop: str, counted: bool) -> tuple[float, int]:
    tracer = Tracer(argv, ready_in, ready_text)
    try:
        time.sleep(0.5)
        idle_start = tracer.cpu()
        time.sleep(2.0)
        idle_per_s = (tracer.cpu() - idle_start) / 2.0
        count = tracer.last_count if counted else tracer.lines
        lines_before = count()
        cpu_start, t0 = tracer.cpu(), time.monotonic()
        run_loop([], loop, LOOKUPS, "localhost")
        time.sleep(2.0)  # let it drain (dnstrace's slowest path is its 1 s tick)
        cpu = tracer.cpu() - cpu_start - idle_per_s * (time.monotonic() - t0)
        events = count() - lines_before
    finally:
        tracer.stop()
    return cpu, events


def main() -> int:
    gethostlatency = shutil.which(GETHOSTLATENCY) or shutil.which("gethostlatency-bpfcc")
    if not gethostlatency:
        print("gethostlatency-bpfcc not found: apt-get install bpfcc-tools", file=sys.stderr)
        return 1
    loop = build_loop()
    tools = {  # name: (argv, where the ready line appears, its text, events counted by the tool itself)
        "dnstrace agent (GaiSource)": (BENCH_AGENT, "stderr", "attached", True),
        "dnstrace trace gai --json": (DNSTRACE + ["trace", "gai", "--json"], "stderr", "attached", False),
        "gethostlatency (bcc)": (["/usr/bin/python3", gethostlatency], "stdout", "LATms", False),
    }
    per_100k: dict[str, list[float]] = {name: [] for name in tools}
    seen: dict[str, list[int]] = {name: [] for name in tools}
    for _round in range(ROUNDS):
        for name, (argv, ready_in, ready_text, counted) in tools.items():
            cpu, events = measure(argv, ready_in, ready_text, loop, counted)
            seen[name].append(events)
            per_100k[name].append(cpu / max(events, 1) * 100_000)
    print(f"agent CPU per 100k traced lookups ({LOOKUPS} getaddrinfo calls per round, {ROUNDS} rounds, best round)")
    for name in tools:
        best = min(per_100k[name])
        print(f"  {name:28s} {best:6.2f} CPU s / 100k events   rounds: "
              + ", ".join(f"{v:.2f}" for v in per_100k[name])
              + f"   events seen per round: {seen[name]}")
    theirs = min(per_100k["gethostlatency (bcc)"])
    for name in ("dnstrace agent (GaiSource)", "dnstrace trace gai --json"):
        print(f"  ratio {name} / gethostlatency = {min(per_100k[name]) / theirs:.3f} (goal <= 0.20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
