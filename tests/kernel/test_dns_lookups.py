"""``dnstrace trace lookups``: libc calls joined to their wire attempts (real kernel, real dnsmasq)."""

from __future__ import annotations

import subprocess
import time

import pytest

from dnstrace.lab.dns_servers import raw_query_argv
from support import TraceProcess, lingering_lookup

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def lookups_trace(wire_lab):
    tp = TraceProcess(["trace", "lookups", "--json"])
    yield tp
    tp.stop()


def run_in(ns, argv) -> tuple[int, str, float]:
    start = time.monotonic()
    proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out, _ = proc.communicate(timeout=30)
    return proc.pid, out, time.monotonic() - start


def lookups_of(tp, pid, timeout_s=15.0):
    return tp.wait_for(lambda e: e.get("kind") == "lookup" and e.get("pid") == pid, timeout_s)


def test_dead_first_nameserver(wire_lab, lookups_trace):
    wire_lab.resolv_conf([wire_lab.dead_v4, wire_lab.server_v4], options=["timeout:1", "attempts:1"])
    pid, out, elapsed = run_in(wire_lab.client, ["getent", "ahosts", "web.example.test"])
    assert "10.1.2.3" in out
    [lookup] = lookups_of(lookups_trace, pid)
    assert lookup["source"] == "gai" and lookup["name"] == "web.example.test" and lookup["error"] is None
    assert 0.9e9 <= lookup["latency_ns"] <= 1.6e9  # one 1 s timeout, then the answer
    attempts = lookup["attempts"]
    dead = [a for a in attempts if a["server"] == wire_lab.dead_v4]
    alive = [a for a in attempts if a["server"] == wire_lab.server_v4]
    assert dead and alive and attempts.index(dead[-1]) < attempts.index(alive[0])
    assert all(a["answered"] is False and a["ns_index"] == 0 for a in dead)
    assert all(a["answered"] is True and a["rcode"] == "NOERROR" and a["ns_index"] == 1 for a in alive)
    assert {a["qtype"] for a in alive} == {"A", "AAAA"}
    assert lookup["timeouts"] == len(dead) and lookup["servers"] == [wire_lab.dead_v4, wire_lab.server_v4]
    assert lookup["resolv_conf"]["nameservers"] == [wire_lab.dead_v4, wire_lab.server_v4]
    assert lookup["resolv_conf"]["timeout"] == 1
    assert alive[0]["ts"] - dead[0]["ts"] >= 0.9e9


def test_nxdomain_search_list_expansions_in_order(wire_lab, lookups_trace):
    wire_lab.resolv_conf([wire_lab.server_v4], search=["a.test", "b.test"], options=["ndots:5"])
    pid, _, _ = run_in(wire_lab.client, lingering_lookup("nope.example"))
    [lookup] = lookups_of(lookups_trace, pid)
    assert lookup["error"] is not None  # EAI_NONAME
    names = [a["qname"] for a in lookup["attempts"]]
    order = list(dict.fromkeys(names))
    assert order == ["nope.example.a.test", "nope.example.b.test", "nope.example"]
    assert all(a["rcode"] == "NXDOMAIN" for a in lookup["attempts"])
    for name in order:
        assert sorted(a["qtype"] for a in lookup["attempts"] if a["qname"] == name) == ["A", "AAAA"]
    assert lookup["resolv_conf"]["search"] == ["a.test", "b.test"] and lookup["resolv_conf"]["ndots"] == 5


def test_truncation_and_tcp_retry_in_one_lookup(wire_lab, lookups_trace):
    wire_lab.resolv_conf([wire_lab.server_v4])
    pid, _, _ = run_in(wire_lab.client, ["getent", "ahostsv4", "big.example.test"])
    [lookup] = lookups_of(lookups_trace, pid)
    protos = [(a["proto"], a["tc"], a["tcp_fallback"]) for a in lookup["attempts"]]
    assert ("udp", True, False) in protos and ("tcp", False, True) in protos
    assert protos.index(("udp", True, False)) < protos.index(("tcp", False, True))
    assert lookup["tcp_fallback"] is True


def test_resolver_without_libc_is_a_wire_lookup(wire_lab, lookups_trace):
    wire_lab.resolv_conf([wire_lab.server_v4])
    pid, out, _ = run_in(wire_lab.client, raw_query_argv(wire_lab.server_v4, "api.example.test"))
    assert out.split()[0] == str(pid)
    [lookup] = lookups_of(lookups_trace, pid)
    assert lookup["source"] == "wire" and lookup["name"] == "api.example.test" and lookup["error"] is None
    assert [a["qtype"] for a in lookup["attempts"]] == ["A"]
    # no getaddrinfo call was joined for this process
    time.sleep(0.5)
    assert not [e for e in lookups_trace.snapshot() if e.get("pid") == pid and e.get("source") == "gai"]
