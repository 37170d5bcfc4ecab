"""``dnstrace top --collector``: the fleet model turns collector query results into the rows the view renders."""

from __future__ import annotations

import pytest

from dnstrace.cli.top.model import FleetModel
from dnstrace.cli.top.view import TopView
from dnstrace.errors import DnstraceError

S = 1_000_000_000
NOW = 1_700_000_000 * S


class FakeCollector:
    """Answers QuerySpecs like the collector's query engine would (rows shaped by shape_rows)."""

    address = "collector:7053"

    def __init__(self):
        self.specs = []
        self.down = False

    def query(self, spec):
        spec.validate()
        self.specs.append(spec)
        if self.down:
            raise DnstraceError("collector collector:7053 is unreachable: connection refused")
        g = spec.group_by
        if spec.mode == "findings":
            return [], [{"rule": "dead-nameserver", "severity": "critical", "count": 4, "hosts": 2,
                         "host_list": ["n1", "n2"], "first_ts": NOW - 60 * S, "last_ts": NOW,
                         "summary": "lookups by pid 4711 (kafka-writer) take 5.00s", "fix": "remove it"}]
        if spec.kinds == ["lookup"]:
            return [], [{g: "kafka-writer" if g == "comm" else "n1", "count": 600, "failures": 3,
                         "p50_ns": 2_000_000, "p99_ns": 5_000_000_000, "max_ns": 5_100_000_000, "hosts": 2}]
        if spec.kinds == ["dns"] and spec.failed_only:
            return [], [{g: "kafka-writer" if g == "comm" else "n1", "count": 37, "failures": 37, "p50_ns": None,
                         "p99_ns": None, "max_ns": None, "hosts": 2}]
        if spec.kinds == ["syn_retry"]:
            return [], [{g: "grpc-client" if g == "comm" else "n2", "count": 70, "failures": 0, "p50_ns": None,
                         "p99_ns": None, "max_ns": None, "hosts": 1}]
        return [], []


def test_fleet_rows_per_process_name_and_findings_render():
    collector = FakeCollector()
    model = FleetModel(collector, refresh_s=60, clock=lambda: NOW)
    snap = model.snapshot("process", "10s")
    rows = {r["comm"]: r for r in snap["rows"]}
    assert rows["kafka-writer"]["p99_ns"] == 5_000_000_000 and rows["kafka-writer"]["unanswered"] == 37
    assert rows["kafka-writer"]["container"] == "2 hosts" and rows["kafka-writer"]["lookups_per_s"] == 2.0
    assert rows["grpc-client"]["syn_retries"] == 70
    assert all(s.since_ns == NOW - 300 * S for s in collector.specs)
    assert {s.group_by for s in collector.specs if s.mode == "top"} == {"comm"}
    text = "\n".join(TopView().render(snap, 80, 24))
    assert "fleet via collector:7053" in text and "kafka-writer" in text and "5.00s" in text
    assert "dead-nameserver: on 2 host(s) (n1, n2)" in text
    # Cached until the refresh interval passes: no second round of queries.
    asked = len(collector.specs)
    model.snapshot("process", "10s")
    assert len(collector.specs) == asked


def test_fleet_rows_per_host_and_stale_data_when_collector_goes_away():
    collector = FakeCollector()
    model = FleetModel(collector, refresh_s=0, clock=lambda: NOW)
    snap = model.snapshot("container", "1m")
    assert {r["container"] for r in snap["rows"]} == {"n1", "n2"}
    assert all(s.since_ns == NOW - 3600 * S for s in collector.specs)
    collector.down = True
    stale = model.snapshot("container", "1m")
    assert stale["rows"] == snap["rows"] and "stale: collector collector:7053 is unreachable" in stale["host"]
    with pytest.raises(DnstraceError):  # nothing to show yet: the error reaches the CLI (one line)
        FleetModel(collector).snapshot()
