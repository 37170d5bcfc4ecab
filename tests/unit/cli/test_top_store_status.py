"""`top --agent` with a failing embedded store: one counted status-line message, the screen intact,
no log line drawn over it, and the events kept in the spool."""

from __future__ import annotations

import contextlib
import io
import time

from dnstrace import config as config_mod
from dnstrace import log
from dnstrace.cli.top.model import TopModel
from dnstrace.cli.top.view import TopView
from dnstrace.collector.query import rollup
from dnstrace.pipeline import shipping


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_failing_embedded_store_is_one_status_line(tmp_path, monkeypatch):
    config = config_mod.load(None, {"agent.embedded_store": f"duckdb:{tmp_path}/node.duckdb",
                                    "agent.embedded_listen": f"unix:{tmp_path}/c.sock",
                                    "agent.spool_dir": str(tmp_path / "spool"),
                                    "agent.batch_max_events": "2"}, environ={})
    log.configure("console", "info")
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        sink = shipping.make_sink(config)
        # From now on the store's group insert is SQL the engine refuses (the DuckDB 2.0.1 break in miniature).
        monkeypatch.setattr(rollup, "ingest_select", lambda *a, **k: "SELECT * FROM (incoming_group WHERE")
        try:
            sink.handle([{"ts": time.time_ns(), "kind": "lookup", "pid": 7, "comm": "app", "name": f"n{i}.",
                          "latency_ns": 1000} for i in range(4)])
            sink.flush()
            wait_until(lambda: sink.stats()["transport"]["errors"] >= 1)
            model = TopModel(host="n1")
            model.delivery_stats = sink.stats
            lines = TopView().render(model.snapshot("process", "10s"), 120, 24)
        finally:
            sink.close()
    assert len(lines) == 24, "the screen keeps its shape"
    status_line = lines[-1]
    assert status_line.startswith("STORE FAILING (")
    errors = int(status_line[len("STORE FAILING ("):].split(" ", 1)[0])
    assert errors >= 1
    assert " batches kept in the spool): " in status_line and "Parser" in status_line
    assert not any("STORE FAILING" in line for line in lines[:-1])
    # The store's error went to the (redirected) stderr, not over the screen.
    assert "embedded store failed" in captured.getvalue()
    # Nothing was acknowledged: the events are still in the spool.
    assert sink.stats()["spool"]["pending_events"] == 4


def test_healthy_store_says_nothing():
    model = TopModel(host="n1")
    model.delivery_stats = lambda: {"transport": {"failing": False, "errors": 0}, "spool": {"pending_batches": 0}}
    assert not TopView().render(model.snapshot("process", "10s"), 120, 24)[-1].startswith("STORE")
