"""Shared pieces of the gai benchmarks: build the load program, run a tracer, read CPU time and BPF stats."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DNSTRACE = [sys.executable, "-m", "dnstrace"]
BENCH_AGENT = [sys.executable, str(HERE / "_gai_agent.py")]


def build_loop() -> str:
    out = Path(tempfile.mkdtemp(prefix="dt-bench-")) / "gailoop"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(HERE / "gailoop.c")], check=True)
    return str(out)


def run_loop(prefix: list[str], loop: str, count: int, name: str, rate: int = 0) -> float:
    """Mean ns per getaddrinfo call of ``count`` calls (``prefix`` e.g. runs it in a namespace),
    as fast as possible or paced at ``rate`` calls per second."""
    argv = prefix + [loop, str(count), name] + ([str(rate)] if rate else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    ns_per_call, failed = out.split()
    if int(failed):
        raise RuntimeError(f"{failed} of {count} lookups of {name} failed")
    return float(ns_per_call)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


@contextlib.contextmanager
def bpf_stats_enabled():
    """kernel.bpf_stats_enabled=1 for the duration; the previous value is restored."""
    with open(BPF_STATS_SYSCTL) as f:
        previous = f.read().strip()
    try:
        with open(BPF_STATS_SYSCTL, "w") as f:
            f.write("1")
        yield
    finally:
        with open(BPF_STATS_SYSCTL, "w") as f:
            f.write(previous)


def _fdinfo(pid: int, fd: str) -> dict[str, str]:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def prog_run_stats(pid: int, names) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) of the BPF programs named ``names`` that process ``pid`` holds open.

    The counters come from the process's fdinfo (this bpftool cannot list holders);
    bpftool only gives each program id its name."""
    by_id = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog":
                info = _fdinfo(pid, fd)
                by_id[int(info["prog_id"])] = (int(info["run_time_ns"]), int(info["run_cnt"]))
        except (OSError, KeyError, ValueError):
            continue
    out = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True, text=True, check=True).stdout
    found = {prog["name"]: by_id[prog["id"]] for prog in json.loads(out)
             if prog.get("name") in names and prog["id"] in by_id}
    missing = set(names) - set(found)
    if missing:
        raise RuntimeError(f"process {pid} holds no BPF program named {sorted(missing)}")
    return found


class Tracer:
    """A tracing process whose stdout goes to a file; ready when ``ready_line`` shows up."""

    def __init__(self, argv: list[str], ready_in: str, ready_text: str, timeout_s: float = 90.0):
        self.out = tempfile.NamedTemporaryFile(prefix="dt-bench-out-", delete=False)
        self.err = tempfile.NamedTemporaryFile(prefix="dt-bench-err-", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL)
        watched = self.out.name if ready_in == "stdout" else self.err.name
        deadline = time.monotonic() + timeout_s
        while ready_text not in Path(watched).read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start: " + Path(self.err.name).read_text())
            time.sleep(0.1)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def lines(self) -> int:
        with open(self.out.name, "rb") as f:
            return sum(1 for _ in f)

    def lines_with(self, text: str) -> int:
        needle = text.encode()
        with open(self.out.name, "rb") as f:
            return sum(1 for line in f if needle in line)

    def last_count(self) -> int:
        """For the bench agent: the last "events=N" line it printed."""
        with open(self.out.name) as f:
            counts = [int(line.split("=")[1]) for line in f if line.startswith("events=")]
        return counts[-1] if counts else 0

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = Path(self.err.name).read_text(errors="replace")
        for f in (self.out, self.err):
            f.close()
            os.unlink(f.name)
        return err
