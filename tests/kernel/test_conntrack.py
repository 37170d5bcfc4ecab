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
    from dnstrace.agent.conntrack import parse_stat

    columns = parse_stat(ns.exec(["cat", "/proc/net/stat/nf_conntrack"]).stdout)
    return {name: sum(values) for name, values in columns.items()}


def test_snat_collision_insert_failures_and_drops(lab, tracer):
    from dnstrace.agent.lab.kernel_scenarios import snat_collision

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
    from dnstrace.agent.netdev import netns_list

    router = lab.netns("rtr")
    router.exec(["iptables", "-t", "nat", "-L"], check=False)  # registers conntrack hooks there
    from dnstrace.agent.lab.netns import run

    assert run(["ip", "netns", "pids", router.name]).stdout.strip() == ""
    names = [ref.name for ref in netns_list()]
    assert router.name in names
