"""Seed incidents rebuilt with ``dnstrace lab``'s builders produce the right finding, naming the right
process and address, within 10 s. One ``dnstrace findings --live`` tracer serves every incident."""

from __future__ import annotations

import time

import pytest

from dnstrace.agent.lab.incidents import BY_NAME
from dnstrace.agent.lab.netns import Lab

FINDING_TIMEOUT_S = 10.0


def available_signals() -> set[str]:
    from dnstrace.agent.trace_cmd import load_targets

    names = {t.name for t in load_targets()}
    if "lookups" in names:
        names |= {"gai", "dns"}
    return names


@pytest.fixture(scope="module")
def tracer(kernel):
    import conftest  # tests/conftest.py: TraceProcess

    signals = [s for s in ("lookups", "gai", "dns", "tcp", "drops", "conntrack") if s in available_signals()]
    if "lookups" in signals:
        signals = [s for s in signals if s not in ("gai", "dns")]
    proc = conftest.TraceProcess(["findings", "--live", "--json", "--duration", "10m",
                                  "--signals", ",".join(signals)])
    yield proc
    proc.stop()


@pytest.mark.parametrize("name", ["dead-nameserver", "truncation", "syn-drops", "conntrack-race", "rp-filter"])
def test_incident_produces_its_finding(tracer, name):
    incident = BY_NAME[name]
    missing = set(incident.signals) - available_signals()
    if missing:
        pytest.skip(f"signal(s) {', '.join(sorted(missing))} not in this build yet")
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
        assert finding["fix"] and finding["severity"] in ("critical", "warning")
        assert elapsed <= FINDING_TIMEOUT_S + 1
