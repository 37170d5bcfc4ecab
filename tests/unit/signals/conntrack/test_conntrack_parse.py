"""Parsing /proc/net/stat/nf_conntrack and turning per-CPU counters into deltas (no kernel)."""

from __future__ import annotations

from dnstrace.signals.conntrack.source import build_event, interesting, parse_stat, per_cpu_delta

STAT = """entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000001  00000003 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000000  00000000 00000000 00000000 00000001
00000001  00000001 00000000 00000000 00000005 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000
"""


def test_parse_stat_keeps_per_cpu_columns():
    columns = parse_stat(STAT)
    assert columns["insert_failed"] == [2, 1] and columns["clashres"] == [3, 1] and columns["invalid"] == [0, 5]
    assert parse_stat("") is None and parse_stat("a b\n1\n") is None


def test_per_cpu_delta_handles_wrap_and_new_namespaces():
    assert per_cpu_delta([5, 1], [2, 0xFFFFFFFF]) == 3 + 2
    assert per_cpu_delta([5, 1], None) == 6


def test_build_event_reports_deltas_and_table_size():
    now = {"columns": parse_stat(STAT), "nf_conntrack_count": 1, "nf_conntrack_max": 262144}
    before = {"columns": {name: [0, 0] for name in now["columns"]}}
    before["columns"]["insert_failed"] = [1, 1]
    event = build_event("42 (rtr)", 42, now, before, ts=7)
    assert event["insert_failed"] == 1 and event["drop"] == 2 and event["clash_resolve"] == 4
    assert event["invalid"] == 5 and event["search_restart"] == 1 and event["early_drop"] == 0
    assert (event["count"], event["max"], event["netns"]) == (1, 262144, "42 (rtr)")
    assert interesting(event, every_interval=False)
    quiet = build_event("42", 42, now, now, ts=8)
    assert not interesting(quiet, every_interval=False) and interesting(quiet, every_interval=True)
    full = dict(quiet, count=900, max=1000)
    assert interesting(full, every_interval=False)
