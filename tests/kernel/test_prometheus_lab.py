"""A real lab agent scraped by Debian's Prometheus: the dead-nameserver alert fires during the lab and
clears after it, and the Grafana dashboard's PromQL answers with the lab's data.

``dnstrace agent`` (embedded collector in a tmp dir, /metrics on a loopback port) traces the
dead-nameserver lab; Prometheus scrapes it every second and evaluates packaging/prometheus's rules
every second (``for:`` shortened to 0s in the test's copy, see tests/prom_support.py).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request

import pytest

from dnstrace.lab.incidents import BY_NAME
from dnstrace.lab.netns import Lab
from prom_support import (
    DASHBOARDS,
    PrometheusServer,
    concrete,
    dashboard_exprs,
    free_port,
    missing_binaries,
    wait_until,
)
from support import DNSTRACE

pytestmark = pytest.mark.kernel

# Dashboard series the dead-nameserver lab itself produces (the others need other incidents: SYN
# retransmits, drops, conntrack, TC; those are shown non-empty on a recorded stream in
# tests/test_prometheus.py and must at least be valid PromQL here). Not the answer series: glibc
# asks the second nameserver with the same message id, which the wire parser marks as a retransmit
# (its key has no server) and the metrics sink skips; only unrelated traffic would fill them.
LAB_SERIES = ("dnstrace_findings_active", "dnstrace_lookup_duration_seconds", "dnstrace_dns_queries_total",
              "dnstrace_dns_unanswered_total", "dnstrace_events_total")


def _ready(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture
def agent(kernel, tmp_path):
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    metrics_port, health_port = free_port(), free_port()
    env = dict(os.environ, DNSTRACE_CONFIG=os.devnull)
    log = open(tmp_path / "agent.log", "wb")
    proc = subprocess.Popen(DNSTRACE + ["agent", "--signals", "lookups", "--lock-file", str(tmp_path / "agent.lock"),
                                        "--spool-dir", str(tmp_path / "spool"),
                                        "--embedded-store", f"duckdb:{tmp_path / 'node.duckdb'}",
                                        "--embedded-listen", f"unix:{tmp_path / 'c.sock'}",
                                        "--metrics-addr", f"127.0.0.1:{metrics_port}",
                                        "--health-addr", f"127.0.0.1:{health_port}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        ready = wait_until(lambda: proc.poll() is None and _ready(f"http://127.0.0.1:{health_port}/readyz"), 120)
        assert ready, (tmp_path / "agent.log").read_text()[-3000:]
        yield f"127.0.0.1:{metrics_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_dead_nameserver_alert_fires_during_the_lab_and_clears_after(agent, tmp_path):
    prometheus = PrometheusServer(tmp_path / "prom", [agent])
    try:
        assert wait_until(prometheus.targets_up, 30), prometheus.log_tail()
        with Lab() as lab:
            running = BY_NAME["dead-nameserver"].build(lab)
            firing = wait_until(lambda: [a for a in prometheus.alerts("DnstraceNameserverFailing")
                                         if a["labels"]["rule"] == "dead-nameserver"], 60)
            assert firing, prometheus.log_tail()
            assert firing[0]["labels"]["family"] == "nameserver"
            assert firing[0]["labels"]["instance"] == agent
            # The lab's nameservers appear per server: the dead one never answered.
            unanswered = wait_until(lambda: prometheus.query(
                f'sum by (server) (dnstrace_dns_unanswered_total{{server="{running.address}"}}) > 0'), 30)
            assert unanswered, "no unanswered queries counted for the dead nameserver"
            # Every dashboard expression is valid here, and those about this incident answer with its data.
            for title, expr in dashboard_exprs(DASHBOARDS / "dnstrace-agent.json"):
                result = wait_until(lambda e=expr: prometheus.query(concrete(e)), 20 if any(
                    s in expr for s in LAB_SERIES) else 0)
                if any(s in expr for s in LAB_SERIES):
                    assert result, f"panel {title!r}: {expr} returned nothing during the lab"
        # The lab is gone: the finding leaves the agent's 60 s window and the alert resolves.
        started = time.monotonic()
        cleared = wait_until(lambda: not [a for a in prometheus.alerts("DnstraceNameserverFailing")
                                          if a["labels"]["rule"] == "dead-nameserver"], 180, interval_s=2)
        assert cleared, f"still firing {time.monotonic() - started:.0f} s after the lab ended"
    finally:
        prometheus.stop()
