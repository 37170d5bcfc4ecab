"""packaging/prometheus and packaging/grafana against Debian's real Prometheus and Alertmanager.

The agent's metrics sink (the same code `dnstrace agent` serves on agent.metrics_addr) is fed a
recorded dead-nameserver stream and scraped by a real Prometheus evaluating the shipped rules;
the nameserver alert fires, reaches a real Alertmanager, and clears when the finding ends. Every
PromQL expression of the Grafana dashboards is evaluated against that Prometheus and must return
data. (There is no Grafana in Debian: the dashboards are checked structurally here, not rendered; the
ClickHouse dashboard's SQL runs in tests/collector/test_grafana_clickhouse.py.)
The same against a real lab run: tests/kernel/test_prometheus_lab.py.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from dnstrace.findings.registry import RULE_IDS
from prom_support import (
    DASHBOARDS,
    PROMTOOL,
    RULES,
    AlertmanagerServer,
    PrometheusServer,
    concrete,
    dashboard_exprs,
    missing_binaries,
    wait_until,
)

S = 1_000_000_000


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules():
    if missing_binaries():
        pytest.skip(missing_binaries())
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_findings_rule_has_exactly_one_alert():
    """A family alert, or the catch-all for rules no family alert names (so a new rule needs no edit here)."""
    future = "a-rule-added-later"  # alerts through the catch-all, with no edit to the rules file
    covering: dict[str, list[str]] = {rule: [] for rule in (*RULE_IDS, future)}
    for alert in _alert_rules():
        match = re.search(r'dnstrace_findings_active\{rule(=~|=|!~)"([^"]+)"\}', alert["expr"])
        if not match:
            continue
        pattern = re.escape(match.group(2)) if match.group(1) == "=" else match.group(2)
        negated = match.group(1) == "!~"  # the catch-all: every rule the others do not name
        for rule in covering:
            if (re.fullmatch(pattern, rule) is None) == negated:
                covering[rule].append(alert["alert"])
        assert all(re.fullmatch(pattern, r) is None or r in RULE_IDS for r in pattern.split("|")), alert
    assert {rule: alerts for rule, alerts in covering.items() if len(alerts) != 1} == {}
    assert any("dnstrace_agent_lost_records_total" in alert["expr"] for alert in _alert_rules())


def test_dashboards_are_well_formed():
    paths = sorted(DASHBOARDS.glob("*.json"))
    assert {p.name for p in paths} == {"dnstrace-agent.json", "dnstrace-clickhouse.json"}
    for path in paths:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
            uid = panel["datasource"]["uid"]
            assert uid.startswith("${") and uid[2:-1] in variables, (path.name, panel["title"])
            for target in panel["targets"]:
                text = target.get("expr") or target.get("rawSql")
                assert text, (path.name, panel["title"])
                for var in re.findall(r"\$(\w+)", text):
                    assert var.startswith("__") or var in variables, (path.name, panel["title"], var)
    clickhouse = json.loads((DASHBOARDS / "dnstrace-clickhouse.json").read_text())
    for panel in clickhouse["panels"]:
        sql = panel["targets"][0]["rawSql"]
        assert re.search(r"\bFROM (events|rollups)\b", sql), panel["title"]


def _dead_nameserver_stream(comm_count: int = 1) -> list[dict]:
    """What the agent sees in the dead-nameserver lab: every lookup first asks 10.53.0.9 (never answers, 1 s
    timeout), then 10.53.0.2 (answers); plus one of each other signal so every dashboard panel has a series."""
    events = []
    for i in range(5):
        base = {"pid": 4242, "comm": "kafka-writer", "container": ""}
        events.append(dict(base, kind="dns", server="10.53.0.9", answered=False, qname="web.example.test"))
        events.append(dict(base, kind="dns", server="10.53.0.2", answered=True, rcode="NOERROR",
                           latency_ns=400_000, qname="web.example.test", tc=i == 0, tcp_fallback=i == 1))
        events.append(dict(base, kind="lookup", latency_ns=1 * S + 600_000, error=None if i else "EAI_AGAIN"))
    events += [{"kind": "syn_retry", "pid": 7, "comm": "node-cache", "container": "", "daddr": "10.53.0.7",
                "dport": 53},
               {"kind": "drop", "pid": 0, "comm": "", "reason": "IP_RPFILTER", "count": 2},
               {"kind": "conntrack", "pid": 0, "netns": "4026531840", "insert_failed": 1, "count": 5, "max": 100},
               {"kind": "agent", "source": "dns", "losses": {"ringbuf_full": 3}}]
    # More process names than the label limit: the overflow counter (a dashboard series) moves too.
    events += [{"kind": "lookup", "pid": 10_000 + i, "comm": f"w{i}", "container": "", "latency_ns": 1000}
               for i in range(comm_count)]
    return events


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    from dnstrace.sinks.metrics import LABEL_LIMITS, MetricsSink

    workdir = tmp_path_factory.mktemp("prometheus")
    sink = MetricsSink("127.0.0.1:0")
    alertmanager = prometheus = None
    try:
        sink.handle(_dead_nameserver_stream(comm_count=LABEL_LIMITS["comm"] + 5))
        alertmanager = AlertmanagerServer(workdir / "am")
        prometheus = PrometheusServer(workdir / "prom", [f"127.0.0.1:{sink.port}"],
                                      alertmanager=f"127.0.0.1:{alertmanager.port}")
        yield sink, prometheus, alertmanager
    finally:
        for server in (prometheus, alertmanager):
            if server is not None:
                server.stop()
        sink.close()


def test_nameserver_alert_fires_reaches_alertmanager_and_clears(stack):
    sink, prometheus, alertmanager = stack
    assert wait_until(prometheus.targets_up, 30), prometheus.log_tail()
    assert not prometheus.alerts("DnstraceNameserverFailing")  # no finding yet: quiet
    sink.set_findings([{"rule": "dead-nameserver", "severity": "critical"},
                       {"rule": "timeout-multiple-latency", "severity": "warning"}])
    firing = wait_until(lambda: prometheus.alerts("DnstraceNameserverFailing"), 30)
    assert firing, prometheus.log_tail()
    assert {a["labels"]["rule"] for a in firing} == {"dead-nameserver", "timeout-multiple-latency"}
    assert all(a["labels"]["family"] == "nameserver" for a in firing)
    assert not prometheus.alerts("DnstraceTruncatedAnswers")
    delivered = wait_until(lambda: alertmanager.active_alerts("DnstraceNameserverFailing"), 30)
    assert delivered, alertmanager.log_tail()
    assert "dead-nameserver" in {a["labels"]["rule"] for a in delivered}
    # The agent's own losses have their alert as well: it fires while the loss counter grows.
    assert not prometheus.alerts("DnstraceAgentLosingRecords")

    def losing():
        sink.handle([{"kind": "agent", "source": "dns", "losses": {"ringbuf_full": 3}}])
        return prometheus.alerts("DnstraceAgentLosingRecords")

    lost = wait_until(losing, 30)
    assert lost and lost[0]["labels"]["source"] == "dns"

    sink.set_findings([])  # the finding ended: the gauge's series go away at the next scrape
    assert wait_until(lambda: not prometheus.alerts("DnstraceNameserverFailing"), 30), prometheus.log_tail()
    assert wait_until(lambda: not alertmanager.active_alerts("DnstraceNameserverFailing"), 30)


def test_recording_rules_produce_series(stack):
    _, prometheus, _ = stack
    groups = yaml.safe_load(RULES.read_text())["groups"]
    records = [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]
    for record in records:
        # The recording group runs every 30 s: evaluate its expression directly instead of waiting.
        expr = next(r["expr"] for g in groups for r in g["rules"] if r.get("record") == record)
        assert wait_until(lambda e=expr: prometheus.query(e.replace("[5m]", "[30s]")), 30), record


def test_every_dashboard_expression_returns_data(stack):
    sink, prometheus, _ = stack
    sink.set_findings([{"rule": "dead-nameserver", "severity": "critical"}])
    exprs = dashboard_exprs(DASHBOARDS / "dnstrace-agent.json")
    assert len(exprs) >= 12
    for title, expr in exprs:
        result = wait_until(lambda e=expr: prometheus.query(concrete(e)), 30)
        assert result, f"panel {title!r}: {expr} returned nothing"
    variable = json.loads((DASHBOARDS / "dnstrace-agent.json").read_text())["templating"]["list"][1]
    metric = re.search(r"label_values\((\w+), instance\)", variable["definition"]).group(1)
    assert prometheus.query(metric)
