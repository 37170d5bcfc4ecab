"""``dnstrace trace conntrack`` against the kernel: a SNAT port collision in a test namespace makes
conntrack inserts fail for real; the per-namespace counter deltas and the NETFILTER_DROP drop
events (attributed to the sending process) must match what the kernel counted."""

from __future__ import annotations

import subprocess

import pytest

from support import TraceProcess


@pytest.fixture(scope="module")
def tracer(kernel):
    tp = TraceProcess(["trace", "conntrack", "--json", "--interval", "500ms"])
    yield tp
    tp.stop()


def kernel_counters(ns) -> dict[str, int]:
    from dnstrace.signals.conntrack.source import parse_stat

    columns = parse_stat(ns.exec(["cat", "/proc/net/stat/nf_conntrack"]).stdout)
    return {name: sum(values) for name, values in columns.items()}


def test_snat_collision_insert_failures_and_drops(lab, tracer):
    from dnstrace.lab.kernel_scenarios import snat_collision

    scenario = snat_collision(lab)
    sports = [40001, 40002, 40003, 40004]
    sender = subprocess.Popen(scenario.sender_argv(sports), stdout=subprocess.PIPE, text=True)
    out, _ = sender.communicate(timeout=20)
    refused = len(out.split("\n")) - 1  # one line per sendto netfilter refused (EPERM)
    assert refused == len(sports) - 1  # the first flow got the NAT port; every later one collided

    truth = kernel_counters(scenario.client)
    assert truth["insert_failed"] == refused

    def ct_events():
        return [e for e in tracer.snapshot() if e["kind"] == "conntrack" and scenario.client.name in e["netns"]]

    tracer.wait_for(lambda e: sum(x["insert_failed"] for x in ct_events()) >= refused, timeout_s=10)
    events = ct_events()
    assert sum(e["insert_failed"] for e in events) == truth["insert_failed"]
    assert sum(e["drop"] for e in events) == truth["drop"]
    assert events[-1]["count"] == 1 and events[-1]["max"] > 0
    assert events[0]["netns_inode"] == scenario.client.inode()

    drops = tracer.wait_for(lambda e: e["kind"] == "drop" and e.get("pid") == sender.pid, timeout_s=5)
    drops = [e for e in tracer.snapshot() if e["kind"] == "drop" and e.get("pid") == sender.pid]
    assert sum(d["count"] for d in drops) == refused
    for drop in drops:
        assert drop["reason"] == "NETFILTER_DROP" and drop["attribution"] == "exact"
        assert drop["comm"] == "python3"
        assert drop["saddr"] == scenario.client_addr and drop["daddr"] == scenario.server_addr
        assert drop["dport"] == scenario.port and drop["sport"] in sports[1:]
    assert sorted(d["sport"] for d in drops) == sports[1:]


def test_router_namespace_without_process_is_read(lab, tracer):
    """Named namespaces with no process in them (a router) are enumerated too."""
    from dnstrace.enrich.netdev import netns_list

    router = lab.netns("rtr")
    router.exec(["iptables", "-t", "nat", "-L"], check=False)  # registers conntrack hooks there
    from dnstrace.lab.netns import run

    assert run(["ip", "netns", "pids", router.name]).stdout.strip() == ""
    names = [ref.name for ref in netns_list()]
    assert router.name in names


SERVER_CODE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
"""

# Holds N established (assured: conntrack may not early-drop them) connections, then on a
# line from stdin tries K more with a short timeout: one SYN each, no retransmit.
CLIENT_CODE = """
import socket, sys
port, hold, extra = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(hold):
    c = socket.create_connection(("127.0.0.1", port), timeout=5); held.append(c)
print("held", flush=True)
sys.stdin.readline()
failed = 0
for _ in range(extra):
    c = socket.socket(); c.settimeout(0.3)
    try:
        c.connect(("127.0.0.1", port)); held.append(c)
    except OSError:
        failed += 1
print("failed", failed, flush=True)
sys.stdin.readline()
"""

CT_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"


def busiest_other_table(skip_inode: int) -> int:
    """The largest conntrack entry count of any other namespace (the host's included)."""
    from dnstrace.enrich.netdev import in_netns, netns_list
    from dnstrace.signals.conntrack.source import read_here

    counts = [0]
    for ref in netns_list():
        if ref.inode == skip_inode:
            continue
        try:
            stats = in_netns(ref.path, read_here)
        except (OSError, TimeoutError):
            continue
        if stats and stats.get("nf_conntrack_count") is not None:
            counts.append(stats["nf_conntrack_count"])
    return max(counts)


def test_table_full_drops_counted_and_attributed(lab, tracer):
    """nf_conntrack_max is global while each namespace counts its own entries: lowered just
    above every other namespace's count for a second or two, it fills only a test namespace,
    whose new SYNs conntrack then drops (``drop``; established flows cannot be early-dropped)."""
    import subprocess as sp

    ns = lab.netns("ctfull")
    ns.exec(["iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"])  # conntrack on
    port = 7777  # the namespace is fresh
    margin, extra = 32, 5
    limit = busiest_other_table(ns.inode()) + margin
    hold = limit + 8
    if hold > 4000:
        pytest.skip(f"another namespace holds {limit - margin} conntrack entries: too many to outgrow")
    server = ns.popen(["python3", "-c", SERVER_CODE, str(port)], stdout=sp.PIPE, text=True)
    client = None
    try:
        assert server.stdout.readline().startswith("listening")
        client = ns.popen(["python3", "-c", CLIENT_CODE, str(port), str(hold), str(extra)],
                          stdin=sp.PIPE, stdout=sp.PIPE, stderr=sp.PIPE, text=True)
        held = client.stdout.readline()
        assert held.startswith("held"), (hold, client.stderr.read() if client.poll() is not None else "")
        before = kernel_counters(ns)
        with open(CT_MAX) as f:
            original_max = f.read().strip()
        try:
            with open(CT_MAX, "w") as f:
                f.write(str(limit))
            client.stdin.write("go\n")
            client.stdin.flush()
            failed_line = client.stdout.readline()
        finally:
            with open(CT_MAX, "w") as f:
                f.write(original_max)
        with open(CT_MAX) as f:
            assert f.read().strip() == original_max
        assert failed_line.split() == ["failed", str(extra)]
        after = kernel_counters(ns)
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait()

    table_full = (after["drop"] - before["drop"]) + (after["early_drop"] - before["early_drop"])
    assert after["drop"] - before["drop"] == extra, (before, after)  # one SYN per refused connect

    def ct_events():
        return [e for e in tracer.snapshot() if e["kind"] == "conntrack" and ns.name in (e["netns"] or "")]

    tracer.wait_for(lambda e: sum(x["drop"] for x in ct_events()) >= after["drop"], timeout_s=10)
    events = ct_events()
    # The namespace is new to the tracer: its counters began at zero, the deltas sum to the totals.
    assert sum(e["drop"] for e in events) == after["drop"]
    assert sum(e["early_drop"] for e in events) == after["early_drop"]
    assert sum(e["drop"] + e["early_drop"] for e in events) >= table_full
    assert max(e["count"] for e in events) >= limit

    def client_drops():
        return [e for e in tracer.snapshot() if e["kind"] == "drop" and e.get("pid") == client.pid]

    tracer.wait_for(lambda e: sum(d["count"] for d in client_drops()) >= extra, timeout_s=5)
    drops = client_drops()
    assert sum(d["count"] for d in drops) == extra
    for drop in drops:
        assert drop["reason"] == "NETFILTER_DROP" and drop["attribution"] == "exact"
        assert drop["comm"] == "python3" and drop["daddr"] == "127.0.0.1" and drop["dport"] == port
