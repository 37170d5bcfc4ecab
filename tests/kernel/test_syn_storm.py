"""Storm safety of ``dnstrace trace tcp``: a client hammering a dead IP with nonblocking
connects (seed 003, tens of thousands of SYN/s) for 10 s. The tracer's memory stays
bounded, per-event output is sampled (and says so), and the counts stay exact: they
equal the peer firewall's counter of dropped SYNs, also when the tracer is stopped right
after the storm (its flush at shutdown reports the last second)."""

from __future__ import annotations

import threading
import time

from support import TraceProcess

STORM_SECONDS = 10
HOLDERS = 20  # sockets left pending for a few seconds so retransmits are part of the storm


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:  # the tracer has exited
        pass
    return None


def holder_code(addr: str, port: int, seconds: float) -> str:
    return ("import socket,time\nsocks=[]\n"
            f"for _ in range({HOLDERS}):\n"
            "    s=socket.socket(); s.setblocking(False)\n"
            f"    s.connect_ex(({addr!r},{port})); socks.append(s)\n"
            f"time.sleep({seconds})\n")


def stats_line(tp: TraceProcess, source: str) -> dict[str, str]:
    for line in tp.stderr_lines:
        if line.startswith(f"dnstrace: {source}: "):
            return dict(item.split("=", 1) for item in line.split(": ", 2)[2].strip().split(", "))
    return {}


def test_syn_storm_counts_are_exact_and_memory_bounded(kernel, lab, tmp_path):
    from dnstrace.lab.kernel_scenarios import build_syn_storm_client, run_syn_storm, syn_dropping_peer

    scenario = syn_dropping_peer(lab)
    binary = build_syn_storm_client(str(tmp_path))
    tp = TraceProcess(["trace", "tcp", "--json", "--daddr", scenario.peer_addr])
    rss: list[int] = []
    sampling = threading.Event()

    def sample_rss():
        while not sampling.is_set():
            kib = rss_kib(tp.proc.pid)
            if kib is None:
                break
            rss.append(kib)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        baseline = scenario.dropped_syns()
        holder = scenario.client.popen(["python3", "-c", holder_code(scenario.peer_addr, scenario.port, 3.5)])
        storm = run_syn_storm(scenario, binary, STORM_SECONDS, hold=0)
        # Stopped at once, within the second of the storm's end: what was sampled since the
        # last tick reaches the stream only through the tracer's flush at shutdown.
        tp.stop()
        holder.wait(timeout=30)  # long done: it held its sockets for 3.5 s of the 10 s storm
        dropped = scenario.dropped_syns() - baseline
    finally:
        sampling.set()
        sampler.join()
        tp.stop()

    events = tp.snapshot()
    mine = [e for e in events if e.get("pid") in (storm.pid, holder.pid)]
    storm_connects = sum(e["count"] for e in mine if e["kind"] == "connect" and e["pid"] == storm.pid)
    retries = sum(e["count"] for e in mine if e["kind"] == "syn_retry")
    connects = sum(e["count"] for e in mine if e["kind"] == "connect")

    print(f"storm: {storm.attempts} SYNs in {storm.seconds:.1f}s = {storm.rate:.0f}/s; "
          f"events={len(events)}; rss KiB min={min(rss)} max={max(rss)}; peer dropped={dropped}")
    stats = stats_line(tp, "tcp")
    # The kernel skips a tracepoint program when another BPF program already runs on that CPU
    # (e.g. the retransmit timer firing inside a traced connect); it counts those skips and the
    # tracer reports them as kernel_missed. Everything else is exact.
    missed = int(stats["kernel_missed"])
    assert storm.attempts > 0 and storm.failed == 0
    assert storm.attempts - missed <= storm_connects <= storm.attempts, (storm_connects, storm.attempts, missed)
    assert retries > 0  # the holders' SYNs were retransmitted during the storm
    # exact against the peer's firewall counter, but for what the kernel itself reported skipped
    assert dropped - missed <= connects + retries <= dropped, (connects, retries, dropped, missed)

    # Sampled, and saying so: far fewer lines than connects, aggregated ones carry a count.
    assert len(events) < storm.attempts / 20
    assert any(e["sampled"] and e["count"] > 1 for e in mine)
    assert int(stats["sampled_out"]) > 0 and int(stats["flow_table_full"]) == 0
    assert int(stats["conn_table_full"]) == 0

    # Bounded memory: the tracer does not grow with the number of SYNs.
    assert max(rss) - rss[min(2, len(rss) - 1)] < 64 * 1024, rss
