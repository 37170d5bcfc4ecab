"""``dnstrace trace dns`` against real resolvers in lab namespaces (real kernel, real dnsmasq).

One tracer process serves the whole module (each bcc compile costs seconds).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dnstrace.lab.dns_servers import (
    BIG_NAME,
    HostileResponder,
    build_message,
    hostile_payloads,
    raw_query_argv,
    send_raw_udp_argv,
)
from support import TraceProcess, lingering_lookup

pytestmark = pytest.mark.kernel
HOSTILE_PORT = 5300


@pytest.fixture(scope="module")
def dns_trace(wire_lab):
    tp = TraceProcess(["trace", "dns", "--json", "--port", str(HOSTILE_PORT)])
    yield tp
    tp.stop()


def run_in(ns, argv) -> tuple[int, str]:
    """Run argv in ``ns``; returns (pid, stdout). ``ip netns exec`` execs, so its pid is the program's."""
    proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out, _ = proc.communicate(timeout=30)
    return proc.pid, out


def of_pid(tp, pid, count=1, timeout_s=10.0, **match):
    def keep(event):
        return event.get("pid") == pid and all(event.get(k) == v for k, v in match.items())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = [e for e in tp.snapshot() if keep(e)]
        if len(events) >= count:
            return events
        time.sleep(0.1)
    return [e for e in tp.snapshot() if keep(e)]


def test_resolver_without_libc_attributed_to_its_pid(wire_lab, dns_trace):
    pid, out = run_in(wire_lab.client, raw_query_argv(wire_lab.server_v4, "api.example.test"))
    assert out.split()[0] == str(pid) and out.split()[2] == "0"  # NOERROR
    [event] = of_pid(dns_trace, pid)
    assert event["qname"] == "api.example.test" and event["qtype"] == "A"
    assert event["server"] == wire_lab.server_v4 and event["proto"] == "udp"
    assert event["answered"] is True and event["rcode"] == "NOERROR" and event["answers"] == ["10.1.2.4"]
    assert event["id"] == int(out.split()[1])
    dig_pid, _ = run_in(wire_lab.client, ["dig", "+short", "+tries=1", f"@{wire_lab.server_v4}", "web.example.test",
                                          "AAAA"])
    [dig] = of_pid(dns_trace, dig_pid)
    assert dig["qtype"] == "AAAA" and dig["answers"] == ["fd00::1:2:3"] and dig["latency_ns"] > 0


def test_ipv6_nameserver(wire_lab, dns_trace):
    pid, _ = run_in(wire_lab.client, raw_query_argv(wire_lab.server_v6, "web.example.test"))
    [event] = of_pid(dns_trace, pid)
    assert event["server"] == "fd53::2" and event["answered"] and event["answers"] == ["10.1.2.3"]
    wire_lab.resolv_conf([wire_lab.server_v6])
    pid, _ = run_in(wire_lab.client, lingering_lookup("api.example.test"))  # ns_index needs its resolv.conf
    events = of_pid(dns_trace, pid, count=2)
    assert {e["qtype"] for e in events} == {"A", "AAAA"}
    assert all(e["server"] == "fd53::2" and e["answered"] and e["ns_index"] == 0 for e in events), events


def test_dns_over_tcp_use_vc(wire_lab, dns_trace):
    wire_lab.resolv_conf([wire_lab.server_v4], options=["use-vc"])
    pid, out = run_in(wire_lab.client, ["getent", "ahosts", "web.example.test"])
    assert "10.1.2.3" in out
    events = of_pid(dns_trace, pid, count=2)
    assert sorted(e["qtype"] for e in events) == ["A", "AAAA"]
    assert all(e["proto"] == "tcp" and e["answered"] and e["rcode"] == "NOERROR" for e in events)
    assert not any(e["tcp_fallback"] for e in events)  # TCP by choice, not after truncation


def test_truncated_answer_then_tcp_retry_linked(wire_lab, dns_trace):
    wire_lab.resolv_conf([wire_lab.server_v4])
    pid, out = run_in(wire_lab.client, ["getent", "ahostsv4", BIG_NAME])
    assert "10.9.0.1" in out
    events = of_pid(dns_trace, pid, count=2)
    udp = [e for e in events if e["proto"] == "udp"]
    tcp = [e for e in events if e["proto"] == "tcp"]
    assert udp and tcp
    assert udp[0]["tc"] is True and udp[0]["qname"] == BIG_NAME
    assert tcp[0]["tc"] is False and tcp[0]["tcp_fallback"] is True and tcp[0]["ancount"] == 40
    assert tcp[0]["fallback_of"]["id"] == udp[0]["id"] and tcp[0]["fallback_of"]["sport"] == udp[0]["sport"]
    assert tcp[0]["ts"] > udp[0]["ts"]


def _pairs(events):
    a = [e for e in events if e["qtype"] == "A"]
    aaaa = [e for e in events if e["qtype"] == "AAAA"]
    return list(zip(a, aaaa, strict=False))


def test_same_port_pair_default_versus_single_request_reopen(wire_lab, dns_trace):
    wire_lab.resolv_conf([wire_lab.server_v4])
    pid, _ = run_in(wire_lab.client, ["getent", "ahosts", "web.example.test"])
    [(a, aaaa)] = _pairs(of_pid(dns_trace, pid, count=2))
    assert a["sport"] == aaaa["sport"]  # default glibc: one socket for both
    first, second = sorted((a, aaaa), key=lambda e: e["ts"])
    assert second["ts"] - first["ts"] < 50_000_000
    assert second["same_port_pair"] is True and second["pair_of"]["id"] == first["id"]
    wire_lab.resolv_conf([wire_lab.server_v4], options=["single-request-reopen"])
    pid, _ = run_in(wire_lab.client, ["getent", "ahosts", "web.example.test"])
    [(a, aaaa)] = _pairs(of_pid(dns_trace, pid, count=2))
    assert a["sport"] != aaaa["sport"]
    assert not a["same_port_pair"] and not aaaa["same_port_pair"]


RESEND_SCRIPT = """
import socket, sys, time
from dnstrace.lab.dns_servers import build_message
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect((sys.argv[1], 53))
query = build_message(0x4242, 0x0100, "web.example.test", 1)
s.send(query)
time.sleep(0.05)
s.send(query)  # the same id again on the same socket, as a resolver's retry does
s.recv(512)
s.recv(512)
"""


def test_same_id_resent_on_one_socket_both_seen(wire_lab, dns_trace):
    """The kernel holds one query per socket and id: a resend pushes the first out as a packet,
    so both sends are reported, the second as a retransmit, and both answers find a query."""
    pid, _ = run_in(wire_lab.client, [sys.executable, "-c", RESEND_SCRIPT, wire_lab.server_v4])
    events = sorted(of_pid(dns_trace, pid, count=2), key=lambda e: e["ts"])
    assert [e["id"] for e in events] == [0x4242, 0x4242]
    assert all(e["answered"] and e["rcode"] == "NOERROR" and e["answers"] == ["10.1.2.3"] for e in events)
    assert [e["retransmit"] for e in events] == [False, True]
    assert events[1]["ts"] - events[0]["ts"] >= 40_000_000
    assert len({e["sport"] for e in events}) == 1


def test_malformed_packets_through_the_kernel_are_counted(wire_lab):
    """Hostile answers and queries reach the agent through the BPF path; it counts them and keeps going."""
    tp = TraceProcess(["trace", "dns", "--json", "--port", str(HOSTILE_PORT)])
    try:
        payloads = hostile_payloads()
        responder = HostileResponder(wire_lab.server, wire_lab.server_v4, HOSTILE_PORT, payloads)
        wire_lab.lab.on_close(responder.close)
        for _ in payloads:
            run_in(wire_lab.client, raw_query_argv(wire_lab.server_v4, "evil.example.test", port=HOSTILE_PORT))
        bad_queries = [p[:20] for p in payloads] + [build_message()[:-3], b"\x00" * 13]
        run_in(wire_lab.client, send_raw_udp_argv(wire_lab.server_v4, 53, bad_queries))
        # still alive and parsing: a good query afterwards is reported
        pid, _ = run_in(wire_lab.client, raw_query_argv(wire_lab.server_v4, "api.example.test"))
        assert of_pid(tp, pid, answered=True)
    finally:
        assert tp.stop() == 0
    stats = "".join(line for line in tp.stderr_lines if "dnstrace: dns:" in line)
    malformed = int(stats.split("malformed=")[1].split(",")[0])
    # 8 hostile answers + the bad queries (some too short for the kernel, the rest for the parser)
    assert malformed >= len(payloads) + len(bad_queries) - 2, stats
    # UDP answers met their queries in the kernel (one record each), hostile ones included
    assert int(stats.split("kernel_paired=")[1].split(",")[0]) >= len(payloads) + 1, stats
    assert "Traceback" not in "".join(tp.stderr_lines)
