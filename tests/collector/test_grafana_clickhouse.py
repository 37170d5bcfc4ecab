"""The ClickHouse Grafana dashboard's SQL runs on a real ClickHouse store holding recorded events.

Grafana's ClickHouse macros ($__fromTime/$__toTime) are replaced with the DateTime values Grafana
would send; every panel must answer with rows (there is no Grafana in Debian to render them)."""

from __future__ import annotations

import json
import time

from recorded import make_events

from dnstrace.collector.store.base import BatchKey
from dnstrace.collector.store.from_url import open_store
from dnstrace.wire.codec import decode_batch, encode_events
from prom_support import DASHBOARDS


def test_every_clickhouse_panel_answers(clickhouse):
    store = open_store(clickhouse.url)
    try:
        now = time.time_ns()
        events = make_events("grafana", 500, start_ts=now - 600 * 1_000_000_000)
        for e in events:
            e["host"] = "node-g"
        events.append({"kind": "dns", "ts": now - 1_000_000_000, "host": "node-g", "pid": 1, "comm": "app",
                       "server": "10.0.0.9", "answered": False, "qname": "x.example"})
        assert store.insert(BatchKey("node-g", "boot-g", int(now % 1_000_000), 1), decode_batch(encode_events(events)))
        since, until = (now - 3600 * 1_000_000_000) // 1_000_000_000, now // 1_000_000_000 + 60
        dashboard = json.loads((DASHBOARDS / "dnstrace-clickhouse.json").read_text())
        for panel in dashboard["panels"]:
            sql = (panel["targets"][0]["rawSql"].replace("$__fromTime", f"toDateTime({since})")
                   .replace("$__toTime", f"toDateTime({until})"))
            rows = store._client.execute(sql)
            assert rows, f"panel {panel['title']!r} returned nothing: {sql}"
            if panel["title"].startswith("Nameserver health"):
                assert any(r[1] == "10.0.0.9" and r[4] >= 1 for r in rows), rows  # the unanswered query counted
    finally:
        store.close()
