"""Seed incidents rebuilt with ``dnstrace lab``'s builders produce the right finding, naming the right
process and address, within 10 s. One ``dnstrace findings --live`` tracer serves every incident."""

from __future__ import annotations

import time

import pytest

from dnstrace.lab.incidents import BY_NAME
from dnstrace.lab.netns import Lab

FINDING_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def tracer(kernel):
    from support import TraceProcess

    proc = TraceProcess(["findings", "--live", "--json", "--duration", "10m",
                         "--signals", "lookups,tcp,drops,conntrack"])
    yield proc
    proc.stop()


@pytest.mark.parametrize("name", ["dead-nameserver", "truncation", "syn-drops", "conntrack-race", "rp-filter",
                                  "ndots"])  # node-local-cache: tests/kernel/test_real_resolver_chains.py
def test_incident_produces_its_finding(tracer, name):
    incident = BY_NAME[name]
    rule = incident.rules[0]
    with Lab() as lab:
        running = incident.build(lab)
        started = time.monotonic()
        matches = tracer.wait_for(lambda e: e.get("kind") == "finding" and e.get("rule") == rule
                                  and running.pid in e.get("pids", []), timeout_s=FINDING_TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert matches, (f"no {rule} finding for pid {running.pid} within {FINDING_TIMEOUT_S} s; findings seen: "
                         + "; ".join(f"{e['rule']}: {e['summary']}" for e in tracer.snapshot()))
        finding = matches[0]
        assert running.comm in finding["comms"]
        assert f"pid {running.pid} ({running.comm})" in finding["summary"]
        assert running.address in finding["summary"] or running.address in str(finding["evidence"])
        # Other tests on this host may flood DNS hard enough for the agent to lose records: a rule that
        # concludes from silence then says so and lowers its severity (see findings.window.mark_unreliable).
        assert finding["fix"]
        summary, severity = finding["summary"], finding["severity"]
        if not summary.startswith("unreliable: the agent itself lost"):
            assert severity in ("critical", "warning"), finding
            assert "agent_lost_dns_records" not in finding["evidence"], finding
        else:
            lost = finding["evidence"]["agent_lost_dns_records"]
            assert summary.startswith(f"unreliable: the agent itself lost {lost} DNS records"), finding
            if "enough to explain" in summary:
                assert severity == "info", finding  # the losses alone could explain the silence
            else:
                assert "so some answers may not have been seen" in summary, finding
                assert severity in ("warning", "info"), finding  # one level below critical/warning
        assert elapsed <= FINDING_TIMEOUT_S + 1


def test_nat_router_loss_is_named_a_collision_not_the_race(tracer):
    """Seed 004 on this kernel: forwarded DNS lost on a one-port SNAT router -> lookups at the 1 s timeout,
    insert_failed in the router's namespace, both queries of each same-port pair lost."""
    incident = BY_NAME["conntrack-race"]
    with Lab() as lab:
        running = incident.build(lab)
        matches = tracer.wait_for(lambda e: e.get("kind") == "finding" and e.get("rule") == "conntrack-insert-failed"
                                  and f"pid {running.pid} (grpc-app)" in e["summary"]
                                  and e["evidence"].get("both_of_pair_lost"), timeout_s=20)
        slow = tracer.wait_for(lambda e: e.get("rule") == "timeout-multiple-latency"
                               and running.pid in e.get("pids", []), timeout_s=15)
        counters = running.report()[0]
    assert matches, "; ".join(f"{e['rule']}: {e['summary']}" for e in tracer.snapshot())
    finding = matches[-1]
    assert "not the A/AAAA race" in finding["summary"] and running.address in finding["summary"]
    assert finding["evidence"]["insert_failed"] >= 2 and "--random-fully" in finding["fix"]
    assert "insert_failed 0," not in counters  # the router's own counter (ground truth) moved
    race = [e for e in tracer.snapshot() if e.get("rule") == "aaaa-same-port-race" and running.pid in e.get("pids", [])]
    assert not race, "both-lost pairs must not be reported as the A/AAAA race"
    assert slow and slow[-1]["evidence"]["timeout_s"] == 1.0
