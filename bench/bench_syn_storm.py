"""Agent cost under a SYN storm: CPU of `dnstrace trace tcp` and events/s while a client sends
nonblocking connects to a SYN-dropping peer as fast as it can (root; builds its own namespaces).

    sudo .venv/bin/python bench/bench_syn_storm.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

from dnstrace.lab.kernel_scenarios import build_syn_storm_client, run_syn_storm, syn_dropping_peer
from dnstrace.lab.netns import Lab

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with Lab() as lab, tempfile.TemporaryDirectory() as workdir:
        scenario = syn_dropping_peer(lab)
        binary = build_syn_storm_client(workdir)

        baseline = run_syn_storm(scenario, binary, args.seconds)
        print(f"storm without tracer: {baseline.attempts} SYNs in {baseline.seconds:.1f}s = {baseline.rate:,.0f} SYN/s")

        tracer = subprocess.Popen([sys.executable, "-m", "dnstrace", "trace", "tcp", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        stats_lines = []
        threading.Thread(target=lambda: lines.extend(tracer.stdout), daemon=True).start()
        ready = threading.Event()

        def read_stderr():
            for line in tracer.stderr:
                stats_lines.append(line)
                if "attached" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read_stderr, daemon=True).start()
        ready.wait(60)
        time.sleep(1)
        cpu0, lines0, t0 = cpu_seconds(tracer.pid), len(lines), time.monotonic()
        storm = run_syn_storm(scenario, binary, args.seconds)
        time.sleep(1.5)
        cpu1, lines1, t1 = cpu_seconds(tracer.pid), len(lines), time.monotonic()
        rss = rss_mib(tracer.pid)
        tracer.send_signal(2)
        tracer.wait(timeout=20)
        time.sleep(0.2)
        wall = t1 - t0
        print(f"storm with tracer:    {storm.attempts} SYNs in {storm.seconds:.1f}s = {storm.rate:,.0f} SYN/s "
              f"(rate vs without: {100 * (storm.rate / baseline.rate - 1):+.1f}%, noisy on a shared box)")
        print(f"tracer CPU (user space): {cpu1 - cpu0:.2f}s over {wall:.1f}s = {100 * (cpu1 - cpu0) / wall:.1f}% of one core"
              " (BPF programs run in the connecting threads: their cost is in the storm rate)")
        print(f"tracer output: {lines1 - lines0} events in {wall:.1f}s = {(lines1 - lines0) / wall:.1f} events/s "
              f"standing for {storm.rate:,.0f} connects/s (sampled, exact counts)")
        print(f"tracer RSS: {rss:.0f} MiB")
        for line in stats_lines:
            if line.startswith("dnstrace: tcp:"):
                print(line.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
