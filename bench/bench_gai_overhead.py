"""Overhead of tracing getaddrinfo: added latency per call, against the floor of a bare uprobe pair.

In one run, interleaved over several rounds, a tight getaddrinfo loop runs
  - untraced,
  - with a bare uprobe+uretprobe pair that does nothing (the floor),
  - while the dnstrace agent's gai source traces every libc (bench/_gai_agent.py:
    GaiSource under the Runner, events counted),
once on the /etc/hosts fast path ("localhost") and once answered by dnsmasq on
127.0.0.1 inside a lab namespace. Goal: dnstrace adds <= 1.25 x the floor.
The loop is pinned to CPU 0 and the tracer to CPU 1, so the figure is the cost
added to each call, not the 2-core box sharing one core with the consumer.
Medians and minimums are both shown: other work on the machine adds noise.
Run as root: ``.venv/bin/python bench/bench_gai_overhead.py``.
"""

from __future__ import annotations

import statistics
import sys

from _gaibench import BENCH_AGENT, Tracer, build_loop, run_loop

ROUNDS = 7
CASES = (  # name, lookups per measurement, host name asked
    ("/etc/hosts fast path", 40000, "localhost"),
    ("dnsmasq on loopback", 6000, "web.example.test"),
)


class BarePair:
    """uprobe + uretprobe on getaddrinfo in every libc the load uses, running an empty program."""

    def __init__(self, libc_path: str):
        from bcc import BPF

        self.bpf = BPF(text="int noop(void *ctx) { return 0; }")
        self.bpf.attach_uprobe(name=libc_path, sym="getaddrinfo", fn_name="noop")
        self.bpf.attach_uretprobe(name=libc_path, sym="getaddrinfo", fn_name="noop")

    def close(self):
        self.bpf.cleanup()


def own_libc() -> str:
    from dnstrace.agent.libcs import libc_flavour

    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and libc_flavour(fields[5].strip()) == "glibc":
                return fields[5].strip()
    raise SystemExit("no glibc mapped by this process")


def main() -> int:
    from dnstrace.agent.lab.netns import Lab

    loop = build_loop()
    libc = own_libc()
    with Lab() as lab:
        ns = lab.netns("bench")
        lab.dnsmasq(ns, ["127.0.0.1"], {"web.example.test": ["10.1.2.3"]})
        ns.write_resolv_conf(["127.0.0.1"])
        pin = ["taskset", "-c", "0"]
        prefixes = {"/etc/hosts fast path": pin, "dnsmasq on loopback": ns.cmd(pin)}
        results = {case[0]: {"none": [], "bare": [], "dnstrace": []} for case in CASES}
        for _round in range(ROUNDS):
            for case, count, name in CASES:
                results[case]["none"].append(run_loop(prefixes[case], loop, count, name))
            pair = BarePair(libc)
            try:
                for case, count, name in CASES:
                    results[case]["bare"].append(run_loop(prefixes[case], loop, count, name))
            finally:
                pair.close()
            tracer = Tracer(["taskset", "-c", "1", *BENCH_AGENT], "stderr", "attached")
            try:
                for case, count, name in CASES:
                    results[case]["dnstrace"].append(run_loop(prefixes[case], loop, count, name))
            finally:
                tracer.stop()
    verdicts = []
    for case, count, _name in CASES:
        for stat_name, stat in (("median", statistics.median), ("min", min)):
            med = {cond: stat(values) for cond, values in results[case].items()}
            floor = med["bare"] - med["none"]
            added = med["dnstrace"] - med["none"]
            ratio = added / floor if floor > 0 else float("inf")
            if stat_name == "median":
                verdicts.append(ratio <= 1.25)
            print(f"\n{case} ({count} calls per measurement, {stat_name} of {ROUNDS} interleaved rounds)")
            print(f"  untraced            {med['none'] / 1e3:9.2f} µs/call")
            print(f"  bare uprobe pair    {med['bare'] / 1e3:9.2f} µs/call  floor: +{floor / 1e3:.2f} µs "
                  f"({100 * floor / med['none']:.1f}%)")
            print(f"  dnstrace gai agent  {med['dnstrace'] / 1e3:9.2f} µs/call  added: +{added / 1e3:.2f} µs "
                  f"({100 * added / med['none']:.1f}%)  = {ratio:.2f} x floor (goal <= 1.25)")
            spread = {c: f"{min(v) / 1e3:.2f}-{max(v) / 1e3:.2f}" for c, v in results[case].items()}
            print(f"  run-to-run range (µs/call): {spread}")
    print("\nverdict (medians):", "goal met" if all(verdicts) else "goal NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
