"""``agent.ship = summary`` against ``all`` on one recorded stream, into DuckDB and into a real ClickHouse.

Top-N and time-bucket answers over whole minutes agree (counts, failures, max and hosts exactly; p50/p99
within the histogram precision); every slow or failed event is stored raw with all its fields (lookups with
their attempts); the summary ships far fewer events and bytes.
"""

from __future__ import annotations

import random
import uuid

import pytest
from recorded import BASE_TS, make_events

from dnstrace.collector.server import CollectorServer
from dnstrace.collector.store.from_url import open_store
from dnstrace.events import is_failed
from dnstrace.latency import QUANTILE_PRECISION
from dnstrace.ship.shipper import LocalTransport, Shipper
from dnstrace.ship.spool import Spool
from dnstrace.ship.summary import Summarizer
from dnstrace.wire.query import QuerySpec
from dnstrace.wire.rollup import MINUTE_NS

SLOW_NS = 100_000_000
START = (BASE_TS // MINUTE_NS + 1) * MINUTE_NS
HOSTS = ("sum-a", "sum-b")
PER_HOST = 12_000
STEP_NS = 20_000_000  # 12k events 20 ms apart: four minutes per host


def _stream(host: str) -> list[dict]:
    rng = random.Random(host)
    events = make_events(host, PER_HOST)
    for i, e in enumerate(events):
        e["ts"] = START + i * STEP_NS
        if e.get("latency_ns") is not None and not is_failed(e):
            e["latency_ns"] = int(10 ** rng.uniform(4, 8.3))  # 10 us .. 200 ms: some past the slow threshold
        if e["kind"] == "dns" and i % 97 == 1:
            e["tc"] = True
    return events


def _ship(store, mode: str, tmp_path, streams) -> dict:
    server = CollectorServer(store, "127.0.0.1:0", insecure=True)
    stats = {}
    for host in HOSTS:
        summary = Summarizer(SLOW_NS, sample_every=50) if mode == "summary" else None
        shipper = Shipper(host_id=host, spool=Spool(str(tmp_path / f"{mode}-{host}"), 64 << 20),
                          transport=LocalTransport(server), batch_max_events=1000, batch_interval_ns=1,
                          boot_id="boot", drain_timeout_s=30, summary=summary, summary_interval_ns=1)
        events = streams[host]
        for i in range(0, len(events), 700):
            shipper.handle(events[i:i + 700])
            shipper.tick()  # every tick ships what is buffered and, in summary mode, the rollups so far
        shipper.flush()
        assert shipper.wait_delivered(60), shipper.stats()
        stats[host] = shipper.stats()
        shipper.close()
    return stats


@pytest.fixture(scope="module", params=["duckdb", "clickhouse"])
def stores(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary")
    if request.param == "duckdb":
        urls = {mode: f"duckdb:{tmp}/{mode}.duckdb" for mode in ("all", "summary")}
    else:
        ch = request.getfixturevalue("clickhouse")
        tag = uuid.uuid4().hex[:6]
        urls = {mode: ch.url_for(f"dnstrace_{mode}_{tag}") for mode in ("all", "summary")}
    streams = {host: _stream(host) for host in HOSTS}
    opened, stats = {}, {}
    for mode, url in urls.items():
        opened[mode] = open_store(url)
        stats[mode] = _ship(opened[mode], mode, tmp, streams)
    yield opened, stats, streams
    for store in opened.values():
        store.close()


END = START + 4 * MINUTE_NS
SPECS = [
    QuerySpec(mode="top", limit=100),
    QuerySpec(mode="top", group_by="host", order_by="count", since_ns=START, until_ns=END),
    QuerySpec(mode="top", group_by="kind", kinds=["gai", "dns", "lookup", "connect"], since_ns=START, until_ns=END),
    QuerySpec(mode="top", group_by="server", kinds=["dns"], order_by="failures"),
    QuerySpec(mode="top", group_by="rcode", kinds=["dns"]),
    QuerySpec(mode="top", group_by="container", hosts=["sum-b"], order_by="count", limit=100),
    QuerySpec(mode="timeseries", bucket_ns=MINUTE_NS, since_ns=START, until_ns=END),
    QuerySpec(mode="timeseries", bucket_ns=2 * MINUTE_NS, group_by="kind"),
    QuerySpec(mode="timeseries", bucket_ns=MINUTE_NS, group_by="host", failed_only=True),
]


def _close(a, b) -> bool:
    if a is None or b is None:
        return a == b
    return abs(a - b) <= QUANTILE_PRECISION * max(a, b) + 1


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.mode}-{s.group_by or 'all'}")
def test_rollup_answers_match_all_mode(stores, spec):
    opened, _, _ = stores
    columns_all, rows_all = opened["all"].query(spec)
    columns_sum, rows_sum = opened["summary"].query(spec)
    assert columns_all == columns_sum
    assert rows_all, "the query must answer something"
    key = [c for c in columns_all if c not in ("count", "failures", "p50_ns", "p99_ns", "max_ns", "hosts")]
    by_key = {tuple(r[k] for k in key): r for r in rows_sum}
    assert len(by_key) == len(rows_all)
    for row in rows_all:
        other = by_key[tuple(row[k] for k in key)]
        for exact in ("count", "failures", "max_ns", "hosts"):
            assert row[exact] == other[exact], (exact, row, other)
        for quantile in ("p50_ns", "p99_ns"):
            assert _close(row[quantile], other[quantile]), (quantile, row, other)


def test_slow_and_failed_events_are_raw_with_every_field(stores):
    opened, _, streams = stores
    sent = [dict(e, host=h) for h, events in streams.items() for e in events]
    for spec, keep in ((QuerySpec(failed_only=True, limit=100_000), is_failed),
                       (QuerySpec(min_latency_ns=SLOW_NS, limit=100_000),
                        lambda e: (e.get("latency_ns") or 0) >= SLOW_NS)):
        expected = sorted((({k: v for k, v in e.items() if v is not None}) for e in sent if keep(e)),
                          key=lambda e: (e["host"], e["ts"]))
        assert expected
        _, rows = opened["summary"].query(spec)
        assert sorted(rows, key=lambda e: (e["host"], e["ts"])) == expected
    _, lookups = opened["summary"].query(QuerySpec(kinds=["lookup"], failed_only=True, limit=100_000))
    _, slow_lookups = opened["summary"].query(QuerySpec(kinds=["lookup"], min_latency_ns=SLOW_NS, limit=100_000))
    assert slow_lookups and all(len(r["attempts"]) == 2 for r in slow_lookups + lookups)
    _, truncated = opened["summary"].query(QuerySpec(kinds=["dns"], limit=100_000))
    assert sum(1 for r in truncated if r.get("tc")) == sum(1 for e in sent if e.get("tc"))


def test_summary_ships_less(stores):
    _, stats, _ = stores
    for host in HOSTS:
        everything, summary = stats["all"][host], stats["summary"][host]
        shipped = summary["summary"]["events_raw"] + summary["summary"]["events_sampled"]
        assert summary["summary"]["events_summarized"] + shipped == PER_HOST
        assert shipped < PER_HOST / 2  # this stream is failure-heavy on purpose; bench/ shows a healthy mix
        assert summary["bytes_spooled"] < everything["bytes_spooled"]


def test_config_turns_summary_mode_and_replicas_on(tmp_path):
    from dnstrace import config as config_mod
    from dnstrace.ship.shipper import make_sink

    path = tmp_path / "dnstrace.toml"
    path.write_text(f'[agent]\nship = "summary"\nsummary_slow = "250ms"\nsummary_sample = 20\n'
                    f'collector = "127.0.0.1:1, localhost:2"\ninsecure = true\nspool_dir = "{tmp_path}/spool"\n')
    shipper = make_sink(config_mod.load(str(path), {}))
    try:
        assert shipper.summary is not None and shipper.summary.slow_ns == 250_000_000
        assert shipper.summary.sample_every == 20
        assert shipper.transport.addresses == ["127.0.0.1:1", "localhost:2"]
    finally:
        shipper.drain_timeout_s = 0
        shipper.close()


def test_cli_top_and_buckets_cover_whole_minutes():
    import argparse

    from dnstrace.cli import query as query_cmd

    parser = argparse.ArgumentParser()
    query_cmd.register(parser.add_subparsers())
    now = START + 90 * 10**9 + 123
    top = query_cmd.build_spec(parser.parse_args(["query", "--since", "10m", "--top", "5"]), now_ns=now)
    assert top.since_ns == START - 9 * MINUTE_NS and top.since_ns % MINUTE_NS == 0
    series = query_cmd.build_spec(parser.parse_args(["query", "--since", f"@{START / 1e9 + 1}", "--until",
                                                     f"@{START / 1e9 + 61}", "--bucket", "1m"]), now_ns=now)
    assert (series.since_ns, series.until_ns) == (START, START + 2 * MINUTE_NS)
    events = query_cmd.build_spec(parser.parse_args(["query", "--since", "10m"]), now_ns=now)
    assert events.since_ns == now - 600 * 10**9  # raw events keep the exact range


@pytest.mark.parametrize("column,value,why", [("lat_bucket", 10**6, "buckets"), ("minute", MINUTE_NS + 1, "whole"),
                                              ("events", 0, "at least one")])
def test_hostile_rollup_rows_are_refused(column, value, why):
    from dnstrace.wire.codec import BatchError, decode_batch, encode_rollup_batch
    from dnstrace.wire.rollup import ROW_COLUMNS

    row = {"minute": MINUTE_NS, "kind": "gai", "failed": False, "lat_bucket": 100, "events": 3, "latency_max": 10}
    row[column] = value
    rows = {name: [row.get(name)] for name, _ in ROW_COLUMNS}
    with pytest.raises(BatchError, match=why):
        decode_batch(encode_rollup_batch([], rows), version=3)
    with pytest.raises(BatchError, match="version"):
        decode_batch(encode_rollup_batch([], rows), version=4)
