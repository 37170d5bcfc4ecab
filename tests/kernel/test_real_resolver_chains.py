"""Findings that stay right with real third-party resolvers and caches (Debian's unbound, dnsmasq, BIND).

Ground truth for wire claims is tcpdump inside the lab's namespace. One ``dnstrace findings --live``
tracer serves the module; every assertion filters by the lab's own pids (other tests may run).
"""

from __future__ import annotations

import time

import pytest

from dnstrace.lab.incidents import BY_NAME, start_client
from dnstrace.lab.netns import Lab
from dnstrace.lab.real_software import capture, dnsmasq_cache, named_authoritative
from dnstrace.lab.resolvers import build_resolver_lab
from support import TraceProcess

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def tracer(kernel):
    proc = TraceProcess(["findings", "--live", "--json", "--duration", "20m", "--signals", "lookups,tcp"])
    yield proc
    proc.stop()


def findings_for(tracer, pid, rule=None):
    return [e for e in tracer.snapshot() if e.get("kind") == "finding" and pid in e.get("pids", [])
            and (rule is None or e.get("rule") == rule)]


def seen(tracer) -> str:
    return "; ".join(f"{e['rule']}: {e['summary']}" for e in tracer.snapshot() if e.get("kind") == "finding")


def test_node_local_cache_failures_are_tied_to_its_upstream_syn_drops(tracer):
    """Seed 002 with real unbound: the app's failing lookups through 127.0.0.1 are blamed on the cache's
    TCP upstream (SYNs dropped), naming both the app and unbound; 127.0.0.1 is not called dead."""
    incident = BY_NAME["node-local-cache"]
    with Lab() as lab:
        running = incident.build(lab)
        syns = capture(lab, running.client_ns, "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and dst port 53")
        matches = tracer.wait_for(lambda e: e.get("kind") == "finding" and e.get("rule") == "local-cache-upstream"
                                  and running.pid in e.get("pids", []) and running.cache_pid in e.get("pids", [])
                                  and "SYN retransmits" in e.get("summary", ""), timeout_s=25)
        assert matches, seen(tracer)
        time.sleep(1)
        captured = [line for line in syns.packets() if f"> {running.address}.53:" in line]
        dead = [e for e in findings_for(tracer, running.pid, "dead-nameserver") if "127.0.0.1" in e["summary"]]
    finding = matches[-1]
    assert f"pid {running.pid} (checkout-api)" in finding["summary"]
    assert f"unbound (pid {running.cache_pid}, unbound) on 127.0.0.1" in finding["summary"]
    assert f"{running.address}:53" in finding["summary"]
    assert "Remove" not in finding["fix"] and "tcp-upstream: no" in finding["fix"]
    assert finding["evidence"]["cache"]["program"] == "unbound" and finding["confidence"] == "measured"
    # every SYN the finding counts left the cache's namespace towards the upstream (tcpdump)
    assert 1 <= finding["evidence"]["upstream_syn_retransmits"] <= len(captured)
    assert not dead, "a working local cache must not be called a dead nameserver"


BIG = "big.example.test"


def test_forking_cache_tcp_retries_are_fallbacks_and_storms_are_counted_per_hop(tracer):
    """Seed 001 with real software: dnsmasq as the node's cache in front of BIND (max-udp-size 512): the
    truncated answer is not cached, dnsmasq retries over TCP from a forked child (a fallback, by flow),
    and the cache-miss storm is counted on each hop, blaming the cache's upstream hop."""
    with Lab() as lab:
        r = build_resolver_lab(lab)
        r.dnsmasq.close()  # BIND is the upstream here
        named_authoritative(lab, r.server, r.server_v4, "example.test",
                            {BIG: [f"10.9.0.{i}" for i in range(1, 41)]}, max_udp_size=512, ttl=0)
        cache = dnsmasq_cache(lab, r.client, r.server_v4)
        r.resolv_conf(["127.0.0.1"])
        upstream_cap = capture(lab, r.client, f"host {r.server_v4} and port 53", interface="eth0")
        app_cap = capture(lab, r.client, "udp and dst port 53 and dst host 127.0.0.1", interface="lo")
        dns = TraceProcess(["trace", "dns", "--json"])
        try:
            app = start_client(r.client, "resolve", "consul-client", 0.05, BIG, "4")
            storm = tracer.wait_for(lambda e: e.get("rule") == "cache-miss-storm" and cache.pid in e.get("pids", [])
                                    and e["evidence"].get("hop") == "cache", timeout_s=60)
            app.terminate()
            app.wait()
            time.sleep(1.5)
        finally:
            dns.stop()
        upstream_lines = upstream_cap.packets()
        app_lines = app_cap.packets()
    assert storm, seen(tracer)
    events = [e for e in dns.snapshot() if e.get("kind") == "dns" and e.get("qname", "").lower() == BIG
              and e.get("server") == r.server_v4 and e.get("comm") == "dnsmasq"]
    tcp = [e for e in events if e["proto"] == "tcp"]
    udp_tc = [e for e in events if e["proto"] == "udp" and e.get("tc")]
    assert udp_tc and tcp
    assert all(e["tcp_fallback"] for e in tcp), [(e["pid"], e["ts"]) for e in tcp if not e["tcp_fallback"]]
    assert {e["pid"] for e in tcp} - {cache.pid}, "dnsmasq answers TCP in a forked child (another pid)"
    # ground truth: the cache really went upstream over TCP after its UDP answers (tcpdump on eth0)
    assert any(".53: Flags [S]" in line and f"> {r.server_v4}.53" in line for line in upstream_lines)
    finding = storm[-1]
    hops = finding["evidence"]["hops"]
    assert f"cache -> {r.server_v4}" in hops and "app -> 127.0.0.1" in hops
    assert f"the cache dnsmasq (pid {cache.pid}) forwards it upstream to {r.server_v4}" in finding["summary"]
    assert finding["summary"].count("times") >= 1 and "upstream" in finding["summary"]
    # each hop's count is at most what tcpdump saw on that hop (the window may hold less)
    upstream_udp = [line for line in upstream_lines if f"> {r.server_v4}.53: " in line and " UDP" not in line
                    and "Flags" not in line]
    app_queries = [line for line in app_lines if "> 127.0.0.1.53:" in line]
    assert 50 <= hops[f"cache -> {r.server_v4}"] <= len(upstream_udp)
    assert 50 <= hops["app -> 127.0.0.1"] <= len(app_queries)
    assert not [e for e in tracer.snapshot() if e.get("rule") == "cache-miss-storm" and app.pid in e.get("pids", [])
                and "nothing between" in e["summary"]], "the app asks a cache: not 'nothing caches it'"
