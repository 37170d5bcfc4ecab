"""The same query suite on DuckDB, a real ClickHouse server and a two-shard replicated ClickHouse cluster.

Filters, aggregations, findings and exactly-once against a Python reference on every store, and the
cluster's and the server's answers against DuckDB's on the same events.
"""

from __future__ import annotations

import fnmatch

import pytest
from collector_helpers import failed_by_definition
from recorded import BASE_TS, make_events

from dnstrace.collector.store.base import BatchKey
from dnstrace.collector.store.from_url import open_store
from dnstrace.wire.codec import decode_batch, encode_events
from dnstrace.wire.query import QuerySpec

HOSTS = ("node-a", "node-b", "node-c")
PER_HOST = 600
BATCH = 200


def _load(store) -> dict[str, list[dict]]:
    sent = {}
    for h, host in enumerate(HOSTS):
        events = make_events(host, PER_HOST, start_ts=BASE_TS + h * 1000)
        for e in events:
            e["host"] = host
        sent[host] = events
        for i in range(0, PER_HOST, BATCH):
            chunk = events[i:i + BATCH]
            assert store.insert(BatchKey(host, "boot-1", 7, i // BATCH + 1), decode_batch(encode_events(chunk)))
    return sent


@pytest.fixture(scope="module", params=["duckdb", "clickhouse", "cluster"])
def loaded(request, tmp_path_factory):
    if request.param == "duckdb":
        url = f"duckdb:{tmp_path_factory.mktemp('duck')}/q.duckdb"
    elif request.param == "clickhouse":
        url = request.getfixturevalue("clickhouse").url
    else:
        url = request.getfixturevalue("clickhouse_cluster").url_for("dnstrace_cluster_test", node=1)
    store = open_store(url)
    if request.param != "duckdb":
        store.truncate()
    sent = _load(store)
    yield request.param, url, store, sent
    store.close()


def _all(sent):
    return [e for events in sent.values() for e in events]


def _norm(event: dict) -> dict:
    return {k: v for k, v in event.items() if v is not None}


def test_raw_events_keep_agent_field_names(loaded):
    _, _, store, sent = loaded
    _, rows = store.query(QuerySpec(mode="events", hosts=["node-b"], limit=10_000))
    assert len(rows) == PER_HOST
    assert [_norm(e) for e in sent["node-b"]] == rows  # every field back, lists and dicts included


def test_filters_match_a_python_reference(loaded):
    _, _, store, sent = loaded
    everything = _all(sent)
    cases = [
        (QuerySpec(kinds=["gai"], min_latency_ns=1_000_000_000, limit=10_000),
         lambda e: e["kind"] == "gai" and e["latency_ns"] >= 1_000_000_000),
        (QuerySpec(kinds=["dns"], rcodes=["SERVFAIL"], hosts=["node-a", "node-c"], limit=10_000),
         lambda e: e["kind"] == "dns" and e["rcode"] == "SERVFAIL" and e["host"] in ("node-a", "node-c")),
        (QuerySpec(name_glob="svc2.*.example", pids=[1001, 1003], limit=10_000),
         lambda e: fnmatch.fnmatchcase(e.get("qname") or e.get("name") or "", "svc2.*.example")
         and e["pid"] in (1001, 1003)),
        (QuerySpec(failed_only=True, containers=["ctr-node-a-1"], limit=10_000),
         lambda e: failed_by_definition(e) and e["container"] == "ctr-node-a-1"),
        (QuerySpec(reasons=["IP_RPFILTER"], kinds=["drop"], comms=["app1"], limit=10_000),
         lambda e: e["kind"] == "drop" and e.get("reason") == "IP_RPFILTER" and e["comm"] == "app1"),
        (QuerySpec(since_ns=BASE_TS + 100_000_000, until_ns=BASE_TS + 200_000_000, servers=["10.0.0.9"],
                   limit=10_000),
         lambda e: BASE_TS + 100_000_000 <= e["ts"] < BASE_TS + 200_000_000 and e.get("server") == "10.0.0.9"),
    ]
    for spec, predicate in cases:
        _, rows = store.query(spec)
        expected = sorted((e["host"], e["ts"]) for e in everything if predicate(e))
        assert expected, f"the reference data should exercise {spec}"
        assert sorted((r["host"], r["ts"]) for r in rows) == expected, spec


def test_limit_returns_most_recent_oldest_first(loaded):
    _, _, store, sent = loaded
    _, rows = store.query(QuerySpec(hosts=["node-a"], limit=5))
    assert [r["ts"] for r in rows] == [e["ts"] for e in sent["node-a"][-5:]]


def test_top_by_host_counts_and_failures(loaded):
    _, _, store, sent = loaded
    _, rows = store.query(QuerySpec(mode="top", group_by="host", order_by="failures", kinds=["gai"]))
    by_host = {r["host"]: r for r in rows}
    assert set(by_host) == set(HOSTS)
    for host in HOSTS:
        gai = [e for e in sent[host] if e["kind"] == "gai"]
        assert by_host[host]["count"] == len(gai)
        assert by_host[host]["failures"] == sum(1 for e in gai if e["error"])
        assert by_host[host]["max_ns"] == max(e["latency_ns"] for e in gai)
        assert by_host[host]["hosts"] == 1
        assert by_host[host]["p99_ns"] >= 1_000_000_000  # 2% of lookups took 5 s


def test_top_orders_and_limits(loaded):
    _, _, store, _ = loaded
    _, rows = store.query(QuerySpec(mode="top", group_by="kind", order_by="count", limit=2))
    assert len(rows) == 2
    assert rows[0]["count"] >= rows[1]["count"]
    _, by_p99 = store.query(QuerySpec(mode="top", group_by="kind", kinds=["gai", "dns", "connect"]))
    assert by_p99[0]["kind"] == "gai"  # the 5 s lookups dominate p99


def test_timeseries_buckets_add_up(loaded):
    _, _, store, sent = loaded
    _, rows = store.query(QuerySpec(mode="timeseries", bucket_ns=100_000_000, group_by="host", hosts=["node-c"]))
    assert sum(r["count"] for r in rows) == PER_HOST
    assert all(r["bucket_ts"] % 100_000_000 == 0 for r in rows)
    first = rows[0]
    expected = [e for e in sent["node-c"] if e["ts"] < first["bucket_ts"] + 100_000_000]
    assert first["count"] == len(expected)


def test_findings_across_the_fleet(loaded):
    _, _, store, sent = loaded
    _, rows = store.query(QuerySpec(mode="findings"))
    assert len(rows) == 1
    row = rows[0]
    assert row["rule"] == "dead_nameserver" and row["hosts"] == 3
    assert row["host_list"] == list(HOSTS)
    findings = [e for e in _all(sent) if e["kind"] == "finding"]
    assert row["count"] == len(findings)
    assert row["first_ts"] == min(e["ts"] for e in findings)
    assert "never answered" in row["summary"]


def test_duplicates_are_not_stored_again(loaded):
    _, url, store, sent = loaded
    chunk = sent["node-a"][:BATCH]
    assert store.insert(BatchKey("node-a", "boot-1", 7, 1), decode_batch(encode_events(chunk))) is False
    _, rows = store.query(QuerySpec(hosts=["node-a"], limit=100_000))
    assert len(rows) == PER_HOST


def test_watermarks_survive_reopening(loaded, tmp_path):
    kind, url, store, sent = loaded
    if kind == "duckdb":
        pytest.skip("one process/connection per DuckDB file: covered by the collector restart test")
    other = open_store(url)
    try:
        chunk = sent["node-b"][:BATCH]
        assert other.insert(BatchKey("node-b", "boot-1", 7, 2), decode_batch(encode_events(chunk))) is False
    finally:
        other.close()


@pytest.fixture(scope="module")
def duckdb_reference(tmp_path_factory):
    store = open_store(f"duckdb:{tmp_path_factory.mktemp('duckref')}/ref.duckdb")
    _load(store)
    yield store
    store.close()


SAME_ANSWER_SPECS = [
    QuerySpec(mode="top", group_by="host", order_by="count"),
    QuerySpec(mode="top", group_by="server", kinds=["dns"], order_by="failures"),
    QuerySpec(mode="top", group_by="comm", kinds=["gai"], pids=[1001, 1002]),  # raw: pid is no rollup dimension
    QuerySpec(mode="top", group_by="name", kinds=["lookup", "gai"], order_by="count", limit=50),
    QuerySpec(mode="timeseries", bucket_ns=60 * 10**9, group_by="kind"),
    QuerySpec(mode="timeseries", bucket_ns=100_000_000, hosts=["node-b"], failed_only=True),
    QuerySpec(mode="findings"),
    QuerySpec(kinds=["gai"], min_latency_ns=1_000_000_000, limit=10_000),
    QuerySpec(limit=250),
]


@pytest.mark.parametrize("spec", SAME_ANSWER_SPECS, ids=lambda s: f"{s.mode}-{s.group_by or 'all'}")
def test_same_answers_as_duckdb(loaded, duckdb_reference, spec):
    kind, _, store, _ = loaded
    if kind == "duckdb":
        pytest.skip("the reference itself")
    columns, rows = store.query(spec)
    ref_columns, ref_rows = duckdb_reference.query(spec)
    assert columns == ref_columns
    assert rows, "the suite must answer something"
    if spec.mode == "top":  # ties in the ordering may come back in either order
        key = lambda r: tuple(str(r[c]) for c in columns)  # noqa: E731
        rows, ref_rows = sorted(rows, key=key), sorted(ref_rows, key=key)
    assert rows == ref_rows


def test_cluster_keeps_each_batch_on_one_shard_and_uses_both(loaded):
    kind, _, store, sent = loaded
    if kind != "cluster":
        pytest.skip("cluster layout only")
    per_shard = {}
    for host, port in store._execute("SELECT host_address, port FROM system.clusters WHERE cluster = %(c)s",
                                     {"c": store.cluster}):
        client = store._connect(store.database, host, int(port))
        try:
            per_shard[port] = dict(client.execute("SELECT host, count() FROM events_local GROUP BY host"))
            engine = client.execute("SELECT engine FROM system.tables WHERE database = %(d)s AND name = 'events_local'",
                                    {"d": store.database})[0][0]
            assert engine == "ReplicatedMergeTree"
        finally:
            client.disconnect()
    assert len(per_shard) == 2 and all(per_shard.values()), per_shard  # both shards hold data
    for host in HOSTS:  # sharded by host: all of a host's batches on one shard
        assert [counts[host] for counts in per_shard.values() if host in counts] == [len(sent[host])]
