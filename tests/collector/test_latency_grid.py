"""One latency grid: ``top`` (the aggregator) and ``dnstrace query`` (a DuckDB store, from rollups and from raw
events) give the same p50/p99 for the same events, and both bound the exact nearest-rank latency."""

from __future__ import annotations

import math
import random

import pytest

from dnstrace.collector.store.base import BatchKey
from dnstrace.collector.store.from_url import open_store
from dnstrace.latency import QUANTILE_PRECISION
from dnstrace.sinks.aggregate import Aggregator
from dnstrace.wire.codec import decode_batch, encode_events
from dnstrace.wire.query import QuerySpec

S = 10**9
T0 = 1_767_225_600 * S  # a whole minute
COMMS = {"curl": 11, "java": 12, "nginx": 13}


def _lookups() -> list[dict]:
    rng = random.Random(12)
    events = []
    for i in range(3000):  # 50 s of lookups: inside top's one-minute view and one stored minute
        comm = rng.choice(sorted(COMMS))
        latency = None if i % 97 == 0 else int(rng.lognormvariate(15, 1.5)) + 1
        events.append({"kind": "lookup", "ts": T0 + i * (50 * S // 3000), "pid": COMMS[comm], "tid": COMMS[comm],
                       "comm": comm, "container": "", "pod": "", "namespace": "", "name": f"n{i % 40}.test",
                       "latency_ns": latency, "error": "EAI_AGAIN" if i % 31 == 0 else None})
    return events


def _nearest_rank(latencies: list[int], q: float) -> int:
    ordered = sorted(latencies)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    events = _lookups()
    aggregator = Aggregator()
    aggregator.handle(events)
    store = open_store(f"duckdb:{tmp_path_factory.mktemp('grid')}/g.duckdb")
    assert store.insert(BatchKey("h1", "boot", 1, 1), decode_batch(encode_events(events)))
    yield events, aggregator, store
    store.close()


@pytest.mark.parametrize("rollups", [True, False], ids=["from-rollups", "from-raw"])
def test_top_and_query_give_the_same_percentiles(both, rollups):
    events, aggregator, store = both
    store.has_rollups = rollups
    try:
        _, per_comm = store.query(QuerySpec(mode="top", kinds=["lookup"], group_by="comm"))
        _, (whole,) = store.query(QuerySpec(mode="top", kinds=["lookup"], group_by="kind"))
    finally:
        store.has_rollups = True
    node = aggregator.node_view("1m")
    assert (whole["count"], whole["failures"]) == (node["lookups"], node["failures"])
    assert (whole["p50_ns"], whole["p99_ns"], whole["max_ns"]) == (node["p50_ns"], node["p99_ns"], node["max_ns"])
    top_rows = {row["comm"]: row for row in aggregator.rows(view="1m")}
    assert {row["comm"] for row in per_comm} == set(COMMS) == set(top_rows)
    for row in per_comm:
        mine = top_rows[row["comm"]]
        assert (row["p50_ns"], row["p99_ns"], row["max_ns"]) == (mine["p50_ns"], mine["p99_ns"], mine["max_ns"])
        latencies = [e["latency_ns"] for e in events if e["comm"] == row["comm"] and e["latency_ns"] is not None]
        for q, name in ((0.5, "p50_ns"), (0.99, "p99_ns")):
            exact = _nearest_rank(latencies, q)
            assert exact <= row[name] <= exact * (1 + QUANTILE_PRECISION) + 1, (name, row, exact)
