"""Rollups answer like raw events (within the histogram's stated precision); group commit stays exactly-once."""

from __future__ import annotations

import math
import random
import threading

import msgpack
import pytest
from collector_helpers import failed_by_definition
from recorded import BASE_TS, make_events

from dnstrace.collector.query import rollup
from dnstrace.collector.query.sql import plan_query
from dnstrace.collector.server import CollectorServer
from dnstrace.collector.store.base import BatchKey
from dnstrace.collector.store.duckdb import DuckDBStore
from dnstrace.collector.store.from_url import open_store
from dnstrace.latency import QUANTILE_PRECISION
from dnstrace.wire import dnstrace_pb2
from dnstrace.wire.codec import BatchError, decode_batch, encode_events
from dnstrace.wire.query import QuerySpec
from dnstrace.wire.rollup import MINUTE_NS

MINUTE = MINUTE_NS
T0 = (BASE_TS // MINUTE) * MINUTE
HOSTS = ("r-a", "r-b", "r-c")


def _events(host: str, count: int, seed: int) -> list[dict]:
    """Events spread over ~10 minutes with latencies over six orders of magnitude."""
    rng = random.Random(f"{host}-{seed}")
    events = make_events(host, count, start_ts=T0 + 7 * 10**9, seed=seed)
    for i, e in enumerate(events):
        e["ts"] = T0 + rng.randrange(10 * MINUTE)
        if e.get("latency_ns") is not None:
            e["latency_ns"] = int(10 ** rng.uniform(3, 9.7))
        if i % 97 == 0 and e["kind"] == "gai":
            e["latency_ns"] = 0
    return events


@pytest.fixture(scope="module", params=["duckdb", "clickhouse"])
def store(request, tmp_path_factory):
    if request.param == "duckdb":
        url = f"duckdb:{tmp_path_factory.mktemp('rollup')}/r.duckdb"
    else:
        url = request.getfixturevalue("clickhouse").url_for("dnstrace_rollup")
    s = open_store(url)
    if request.param == "clickhouse":
        s.truncate()
    s.sent = []
    for h, host in enumerate(HOSTS):
        events = _events(host, 3000, h)
        for e in events:
            e["host"] = host
        s.sent += events
        pendings = [s.submit(BatchKey(host, "boot", 1, n + 1), decode_batch(encode_events(events[i:i + 500])))
                    for n, i in enumerate(range(0, len(events), 500))]
        assert all(p.wait() for p in pendings)
    yield s
    s.close()


def _raw(store, spec):
    store.has_rollups = False
    try:
        return store.query(spec)[1]
    finally:
        store.has_rollups = True


def _reference_quantile(latencies: list[int], q: float) -> int:
    """The latency of the event of nearest rank (what dnstrace.latency's quantiles bound)."""
    ordered = sorted(latencies)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


SPECS = [
    QuerySpec(mode="top", since_ns=T0 + 90 * 10**9 + 123, until_ns=T0 + 8 * MINUTE + 5, kinds=["gai", "lookup"]),
    QuerySpec(mode="top", group_by="host", failed_only=True, order_by="failures"),
    QuerySpec(mode="top", group_by="server", kinds=["dns"], since_ns=T0 + 30 * 10**9, order_by="count"),
    QuerySpec(mode="top", group_by="kind", hosts=["r-a", "r-c"], comms=["app0", "app2"], until_ns=T0 + 5 * MINUTE + 7),
    QuerySpec(mode="timeseries", bucket_ns=MINUTE, group_by="kind", since_ns=T0 + 61 * 10**9, until_ns=T0 + 9 * MINUTE),
    QuerySpec(mode="timeseries", bucket_ns=2 * MINUTE, kinds=["connect"], containers=["ctr-r-b-1"]),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.mode}-{s.group_by or 'default'}")
def test_rollup_answers_agree_with_raw_within_precision(store, spec):
    group_key = spec.group_by or ("comm" if spec.mode == "top" else "")
    assert plan_query(spec, store.dialect).reads_rollups, "this spec should be covered by rollups"
    before = store.stats()["queries_rollup"]
    columns, rows = store.query(spec)
    assert store.stats()["queries_rollup"] == before + 1
    raw_rows = _raw(store, spec)
    key_of = (lambda r: (r["bucket_ts"], r.get(group_key))) if spec.mode == "timeseries" else (lambda r: r[group_key])
    by_key = {key_of(r): r for r in raw_rows}
    assert {key_of(r) for r in rows} == set(by_key)
    assert len(rows) == len(raw_rows) > 0
    for row in rows:
        exact = by_key[key_of(row)]
        # p50/p99 too: raw and rollup answers read the same latency histogram
        for name in ("count", "failures", "max_ns", "hosts", "p50_ns", "p99_ns"):
            assert row[name] == exact[name], (name, row, exact)
        matching = [e for e in store.sent if _matches(spec, e) and _key(spec, group_key, e) == key_of(row)]
        latencies = [e["latency_ns"] for e in matching if e.get("latency_ns") is not None]
        assert len(matching) == row["count"]
        for q, name in ((0.5, "p50_ns"), (0.99, "p99_ns")):
            if not latencies:
                assert row[name] is None
                continue
            reference = _reference_quantile(latencies, q)
            assert reference <= row[name] <= reference * (1 + QUANTILE_PRECISION) + 1, (name, row, reference)
    if spec.mode == "top":
        order = {"p99": "p99_ns", "count": "count", "failures": "failures"}[spec.order_by or "p99"]
        values = [(r[order] is None, -(r[order] or 0)) for r in rows]  # descending, groups without latency last
        assert values == sorted(values)


def _matches(spec, e) -> bool:
    if spec.since_ns and e["ts"] < spec.since_ns or spec.until_ns and e["ts"] >= spec.until_ns:
        return False
    for name, column in rollup.FILTERS.items():
        values = getattr(spec, name)
        if values and e.get(column) not in values:
            return False
    if spec.failed_only:
        return failed_by_definition(e)
    return True


def _key(spec, group_key, e):
    if spec.mode == "timeseries":
        return (e["ts"] // spec.bucket_ns * spec.bucket_ns, e.get(group_key) if group_key else None)
    return e.get(group_key)


def test_uncovered_queries_fall_back_to_raw(store):
    for spec in (QuerySpec(mode="top", pids=[1001]), QuerySpec(mode="top", group_by="pid"),
                 QuerySpec(mode="top", min_latency_ns=10**6), QuerySpec(mode="timeseries", bucket_ns=10**9),
                 QuerySpec(mode="top", name_glob="svc1.*"), QuerySpec(mode="events", kinds=["dns"])):
        assert not plan_query(spec, store.dialect).reads_rollups
    before = store.stats()["queries_raw"]
    _, rows = store.query(QuerySpec(mode="top", group_by="pid", kinds=["gai"]))
    assert store.stats()["queries_raw"] == before + 1
    assert sum(r["count"] for r in rows) == sum(1 for e in store.sent if e["kind"] == "gai")


def test_group_commit_stores_each_batch_once_across_threads(tmp_path):
    store = open_store(f"duckdb:{tmp_path}/g.duckdb")
    try:
        payloads = {t: [encode_events(make_events(f"t{t}", 200, start_ts=BASE_TS + s * 10**9, seed=s))
                        for s in range(12)] for t in range(4)}
        results: dict[int, list[bool]] = {}

        def agent(t: int) -> None:
            pendings = [store.submit(BatchKey(f"host-{t}", "boot", 9, s + 1), decode_batch(p))
                        for s, p in enumerate(payloads[t])]
            # the same batches again while the first copies may still be queued: all duplicates
            again = [store.submit(BatchKey(f"host-{t}", "boot", 9, s + 1), decode_batch(p))
                     for s, p in enumerate(payloads[t])]
            results[t] = [p.wait() for p in pendings] + [p.wait() for p in again]

        threads = [threading.Thread(target=agent, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        for t in range(4):
            assert results[t] == [True] * 12 + [False] * 12
        stats = store.stats()
        assert stats["batches_stored"] == 48 and stats["batches_duplicate"] == 48
        assert stats["commits"] < 48  # batches really shared transactions
        assert store.count() == 48 * 200
        assert store._execute("SELECT sum(events) FROM rollups", {})[0][0] == 48 * 200
    finally:
        store.close()


def test_a_group_laid_out_ahead_is_used_only_when_every_batch_in_it_is_fresh(clickhouse):
    from dnstrace.collector.store.clickhouse import ClickHouseStore

    store = ClickHouseStore(clickhouse.url_for("dnstrace_ahead"))
    store.GROUP_MAX_EVENTS = store.GROUP_GOOD_EVENTS = 1000  # two 500-event batches per group
    events = {name: make_events(name, 500, start_ts=BASE_TS + n * 10**9, seed=n)
              for n, name in enumerate(("a1", "a2", "a3", "b1", "b2"))}
    for name, batch in events.items():
        for e in batch:
            e["comm"] = name  # which batch each stored row came from
    order = [("a", 1, "a1"), ("a", 2, "a2"), ("a", 3, "a3"), ("a", 1, "a1"), ("b", 1, "b1"), ("b", 2, "b2")]
    # Queued before the writer starts, so the groups are known: [a1 a2], then [a3, a1 again] laid out while
    # the first is written (a1's replay makes that layout useless), then [b1 b2] laid out ahead and used.
    pendings = [store.submit(BatchKey(host, "boot", 1, seq), decode_batch(encode_events(events[name])))
                for host, seq, name in order]
    store.open()
    try:
        assert [p.wait() for p in pendings] == [True, True, True, False, True, True]
        stats = store.stats()
        assert (stats["layouts_ahead"], stats["layouts_dropped"], stats["commits"]) == (1, 1, 3)
        rows = store._execute("SELECT comm, host, seq, count() FROM events GROUP BY comm, host, seq ORDER BY comm", {})
        assert rows == [("a1", "a", 1, 500), ("a2", "a", 2, 500), ("a3", "a", 3, 500), ("b1", "b", 1, 500),
                        ("b2", "b", 2, 500)]
        assert store._execute("SELECT sum(events) FROM rollups", {})[0][0] == 2500
    finally:
        store.close()


class _FlakyStore(DuckDBStore):
    """Fails the write of one chosen batch once."""

    fail_seq = 3

    def _write_group(self, batches, laid_out=None):
        if any(key.seq == self.fail_seq for key, _ in batches) and self.fail_seq:
            self.fail_seq = 0 if len(batches) == 1 else self.fail_seq
            raise OSError("disk on fire")
        return super()._write_group(batches, laid_out)


def test_a_failed_batch_blocks_later_batches_of_its_agent_until_resent(tmp_path):
    store = _FlakyStore(str(tmp_path / "f.duckdb"))
    store.open()
    try:
        batches = [decode_batch(encode_events(make_events("f", 50, start_ts=BASE_TS + s * 10**9))) for s in range(5)]
        pendings = [store.submit(BatchKey("flaky", "boot", 1, s + 1), b) for s, b in enumerate(batches)]
        other = store.submit(BatchKey("steady", "boot", 1, 1), batches[0])
        outcomes = []
        for p in pendings:
            try:
                outcomes.append(p.wait())
            except OSError:
                outcomes.append("failed")
            except RuntimeError:
                outcomes.append("blocked")
        assert outcomes == [True, True, "failed", "blocked", "blocked"]
        assert other.wait() is True
        # the agent resends from seq 3: everything is stored, nothing twice
        assert [store.insert(BatchKey("flaky", "boot", 1, s + 1), batches[s]) for s in range(2, 5)] == [True] * 3
        assert store.insert(BatchKey("flaky", "boot", 1, 2), batches[1]) is False
        assert store.count() == 6 * 50
    finally:
        store.close()


def _v2_with_bad_attrs(events) -> bytes:
    obj = msgpack.unpackb(encode_events(events))
    words = obj["cols"]["attrs"]["d"]
    words[0] = '{"a":1}, {"b":2}'  # starts with { and ends with }, but is not one JSON object
    return msgpack.packb(obj, use_bin_type=True)


def test_invalid_attrs_json_is_refused_at_insert_and_the_group_survives(tmp_path):
    events = make_events("j", 20)
    bad = _v2_with_bad_attrs(events)
    with pytest.raises(BatchError):
        decode_batch(bad)  # the default decoder parses attrs
    store = open_store(f"duckdb:{tmp_path}/j.duckdb")
    try:
        assert store.validates_attrs_json
        good = store.submit(BatchKey("j", "b", 1, 1), decode_batch(encode_events(events)))
        refused = store.submit(BatchKey("j", "b", 2, 1), decode_batch(bad, check_attrs_json=False))
        assert good.wait() is True
        with pytest.raises(BatchError):
            refused.wait()
        assert store.count() == 20 and store.stats()["batches_refused"] == 1
    finally:
        store.close()


def test_schema_v1_batches_are_still_accepted(tmp_path):
    store = open_store(f"duckdb:{tmp_path}/v1.duckdb")
    server = CollectorServer(store, f"unix:{tmp_path}/v1.sock", insecure=True)
    try:
        events = make_events("v1", 30)
        for version, seq in ((1, 1), (2, 2)):
            batch = dnstrace_pb2.Batch(schema_version=version, host_id="v1", boot_id="b", instance=1, seq=seq,
                                       event_count=30, events=encode_events(events, version=version))
            assert server.accept(batch) == (True, 30)
        _, rows = store.query(QuerySpec(hosts=["v1"], limit=100))
        expected = [{k: v for k, v in e.items() if v is not None} | {"host": "v1"} for e in events]
        by_ts = sorted(rows, key=lambda r: r["ts"])
        assert by_ts[0::2] == by_ts[1::2] == sorted(expected, key=lambda r: r["ts"])
    finally:
        store.close()


def test_retention_drops_whole_rollup_minutes(tmp_path):
    store = open_store(f"duckdb:{tmp_path}/ret.duckdb", retention_ns=1)
    try:
        events = _events("ret", 400, 1)
        assert store.insert(BatchKey("ret", "b", 1, 1), decode_batch(encode_events(events)))
        cutoff = T0 + 5 * MINUTE + 30 * 10**9
        store.retention_ns = 10**9
        store.apply_retention(now_ns=cutoff + 10**9)
        minutes = [m for (m,) in store._execute("SELECT DISTINCT minute FROM rollups", {})]
        assert minutes and min(minutes) == T0 + 5 * MINUTE  # the minute holding the cutoff stays
        assert store.count() == sum(1 for e in events if e["ts"] >= cutoff)
    finally:
        store.close()
