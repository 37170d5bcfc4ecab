"""Aggregator edges with literal expectations: eviction by activity, late events, window bounds, caps."""

from __future__ import annotations

from test_aggregate import T0, S, ev  # the same event maker and clock as the aggregator's main tests

from dnstrace.sinks.aggregate import Aggregator, Series


def test_busy_server_survives_eviction_of_quieter_newer_ones():
    agg = Aggregator(max_servers=10)
    for _ in range(3):
        agg.add(ev("dns", 0, server="10.0.0.1", rcode="NOERROR"))
    for i in range(2, 11):  # nine servers seen later, once each
        agg.add(ev("dns", 1, server=f"10.0.0.{i}", rcode="NOERROR"))
    agg.add(ev("dns", 2, server="10.0.0.99", rcode="NOERROR"))  # the table is full: one goes to "other"
    assert agg.stats()["server_evictions"] == 1
    assert agg.servers.series["10.0.0.1"].activity == 3
    assert "10.0.0.2" not in agg.servers.series  # least active, and first of its ties
    assert sorted(agg.servers.series) == ["10.0.0.1", "10.0.0.10", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
                                          "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.99"]


def test_busy_container_survives_eviction_of_quieter_newer_ones():
    agg = Aggregator(max_containers=10)
    for _ in range(3):
        agg.add(ev("lookup", 0, pid=1, latency_ns=5, container="busy"))
    for i in range(2, 11):
        agg.add(ev("lookup", 1, pid=i, latency_ns=5, container=f"c{i}"))
    agg.add(ev("lookup", 2, pid=99, latency_ns=5, container="late"))
    assert agg.stats()["container_evictions"] == 1
    assert agg.containers.series["busy"].activity == 3
    assert agg.containers.series["c3"].activity == 1
    assert "c2" not in agg.containers.series
    rows = {r["container"]: r["lookups"] for r in agg.rows(by="container", view="1m")}
    assert rows["busy"] == 3 and rows["other"] == 1 and rows["late"] == 1


def test_server_p50_is_read_at_the_median():
    agg = Aggregator()
    # answers 1 ns below 2^20, 2^21 and 2^23 ns (bucket upper edges): x10, x80, x10
    for ns, n in ((2**20 - 1, 10), (2**21 - 1, 80), (2**23 - 1, 10)):
        for _ in range(n):
            agg.add(ev("dns", 0, server="10.0.0.2", rcode="NOERROR", latency_ns=ns))
    (server,) = agg.server_rows()
    assert (server["p50_ns"], server["p99_ns"], server["max_ns"]) == (2**21, 2**23 - 1, 2**23 - 1)


def test_event_older_than_every_kept_slot_counts_in_the_newest():
    s = Series("k")
    for second, n in ((100, 1), (101, 10), (103, 100)):
        s.slot(second).lookups += n
    s.slot(50).lookups += 1000
    assert [(sec, slot.lookups) for sec, slot in s.slots] == [(100, 1), (101, 10), (103, 1100)]


def test_event_without_timestamp_counts_in_the_current_second():
    agg = Aggregator()
    assert agg.now_s == 0
    agg.add({"kind": "lookup", "ts": None, "pid": 10, "comm": "app", "latency_ns": 5})
    assert [sec for sec, _ in agg.node.slots] == [0]
    agg.add({"kind": "lookup", "ts": 60 * S, "pid": 10, "comm": "app", "latency_ns": 5})
    assert agg.rows(view="1m")[0]["lookups"] == 1  # second 0 is a minute before second 60
    agg.add({"kind": "lookup", "pid": 10, "comm": "app", "latency_ns": 5})
    assert agg.rows(view="1s")[0]["lookups"] == 2


def test_conntrack_table_sizes_kept_for_64_namespaces():
    agg = Aggregator()
    for i in range(70):
        agg.add({"kind": "conntrack", "ts": T0, "netns": str(i), "count": i, "max": 100})
    tables = agg.node_view()["conntrack_tables"]
    assert len(tables) == 64 and tables["63"] == {"count": 63, "max": 100} and "64" not in tables
    agg.add({"kind": "conntrack", "ts": T0, "netns": "5", "count": 50, "max": 100})  # a known one still updates
    assert agg.node_view()["conntrack_tables"]["5"] == {"count": 50, "max": 100}


def test_process_detail_covers_exactly_sixty_seconds():
    agg = Aggregator()
    agg.add(ev("lookup", 0, latency_ns=5))
    agg.add(ev("lookup", 60, latency_ns=5))
    detail = agg.process_detail(10)
    assert (detail["lookups"], detail["lookups_per_s"]) == (1, 0.02)


def test_slowest_lookups_stay_for_a_minute():
    agg = Aggregator()
    agg.add(ev("lookup", 0, name="slow", latency_ns=3 * S))
    agg.tick(T0 + 59 * S)
    assert [s["name"] for s in agg.process_detail(10)["slowest"]] == ["slow"]
    agg.add(ev("lookup", 59, name="other", latency_ns=1))  # keeps the process's series alive
    agg.tick(T0 + 60 * S)
    assert [s["name"] for s in agg.process_detail(10)["slowest"]] == ["other"]


def test_a_lookup_faster_than_the_five_kept_is_not_looked_at():
    agg = Aggregator()
    for i in range(5):
        agg.add(ev("lookup", 0, name=f"n{i}", latency_ns=(10 + i) * S))
    # not among the slowest: its attempts are never read, so a malformed field there is harmless
    agg.add(ev("lookup", 1, name="fast", latency_ns=10 * S, attempts=7))
    assert [s["name"] for s in agg.process_detail(10)["slowest"]] == ["n4", "n3", "n2", "n1", "n0"]


# --- tables, capacities and windows ---------------------------------------------------------------------

from dnstrace.sinks.aggregate import Table  # noqa: E402


def test_a_series_never_counted_sorts_as_second_zero_for_eviction():
    t = Table("t", 2)
    t.get("counted").slot(0)
    t.get("never")  # no slot yet: last seen at second 0, like "counted", and newer
    t.get("new")
    assert set(t.series) == {"never", "new"}
    t = Table("t", 2)
    t.get("never")
    t.get("counted").slot(0)
    t.get("new")
    assert set(t.series) == {"counted", "new"}
    assert Series("k").last_s == 0


def test_default_table_capacities():
    for maker, table_name, limit, evicted in ((lambda i: ev("lookup", 0, pid=i + 1, latency_ns=5), "processes", 4096, 409),
                                              (lambda i: ev("lookup", 0, pid=1, latency_ns=5, container=f"c{i}"),
                                               "containers", 1024, 102),
                                              (lambda i: ev("dns", 0, server=f"s{i}", rcode="NOERROR"), "servers", 256, 25)):
        agg = Aggregator()
        for i in range(limit):
            agg.add(maker(i))
        table = getattr(agg, table_name)
        assert (len(table.series), table.evictions) == (limit, 0)
        agg.add(maker(limit))
        assert (len(table.series), table.evictions) == (limit - evicted + 1, evicted)


def test_absorbing_keeps_the_newest_sixty_seconds():
    s, o = Series("other"), Series("victim")
    for second in range(60):
        s.slot(second).lookups += 1
    o.slot(60).lookups += 5
    s.absorb(o)
    assert [sec for sec, _ in s.slots] == list(range(1, 61))
    assert s.slots[-1][1].lookups == 5


def test_process_percentiles_are_read_at_their_ranks():
    agg = Aggregator()
    for ns, n in ((2**20 - 1, 10), (2**21 - 1, 75), (2**22 - 1, 10), (2**23 - 1, 5)):
        for _ in range(n):
            agg.add(ev("lookup", 0, latency_ns=ns))
    (row,) = agg.rows()
    assert (row["p50_ns"], row["p90_ns"], row["p99_ns"]) == (2**21, 2**22, 2**23 - 1)


def test_a_process_with_nothing_in_the_view_has_no_row():
    agg = Aggregator()
    agg.add(ev("lookup", 0, pid=1, latency_ns=5))
    agg.add(ev("lookup", 30, pid=2, latency_ns=5))
    assert [r["pid"] for r in agg.rows(view="10s")] == [2]
    assert sorted(r["pid"] for r in agg.rows(view="1m")) == [1, 2]


def test_servers_with_nothing_in_the_view_are_skipped_not_the_end():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.1", rcode="NOERROR"))
    agg.add(ev("dns", 30, server="10.0.0.2", rcode="NOERROR"))
    assert [r["server"] for r in agg.server_rows(view="10s")] == ["10.0.0.2"]


def test_a_lookup_slower_than_the_fastest_kept_takes_its_place():
    agg = Aggregator()
    for i, ms in enumerate((10, 9, 8, 7, 6)):
        agg.add(ev("lookup", i, name=f"n{ms}", latency_ns=ms * 1_000_000))
    agg.add(ev("lookup", 5, name="n6.5", latency_ns=6_500_000))
    assert [s["name"] for s in agg.process_detail(10)["slowest"]] == ["n10", "n9", "n8", "n7", "n6.5"]


def test_one_second_view_is_the_current_second_only():
    agg = Aggregator()
    agg.add(ev("lookup", 58, latency_ns=5))
    agg.add(ev("lookup", 59, latency_ns=5))
    row = agg.rows(view="1s")[0]
    assert (row["lookups"], row["lookups_per_s"]) == (1, 1.0)


def test_agent_losses_window_excludes_its_first_second():
    agg = Aggregator()
    agg.add({"kind": "agent", "ts": T0, "source": "dns", "lost": 5, "dns_lost": 5})
    agg.add({"kind": "agent", "ts": T0 + 60 * S, "source": "dns", "lost": 1})
    assert (agg.agent_losses(60)["lost"], agg.agent_losses(60)["dns_lost"]) == (1, 0)
    assert agg.agent_losses(61)["lost"] == 6


def test_agent_losses_remember_the_last_4096_records():
    agg = Aggregator()
    for _ in range(4097):
        agg.add({"kind": "agent", "ts": T0, "source": "dns", "lost": 1})
    losses = agg.agent_losses()
    assert (losses["lost"], losses["total"]) == (4096, 4097)


def test_breakdown_overflow_adds_up_across_seconds():
    agg = Aggregator()
    for second in (0, 1):
        for i in range(17):
            agg.add(ev("drop", second, reason=f"R{i}", count=2))
    row = agg.rows(view="1m")[0]
    assert row["drops_by_reason"]["other"] == 4 and row["drops"] == 68


def test_connects_are_counted_per_slot():
    agg = Aggregator()
    agg.add(ev("connect", 0))
    agg.add(ev("connect", 0))
    series = agg.processes.series[(10, "app")]
    assert series.view(agg.now_s, 60).connects == 2
    assert agg.node.view(agg.now_s, 60).connects == 2


def test_process_detail_rate_is_per_second_of_the_minute():
    agg = Aggregator()
    for i in range(30):
        agg.add(ev("lookup", i, latency_ns=5))
    assert agg.process_detail(10)["lookups_per_s"] == 0.5


def test_agent_losses_default_window_is_sixty_seconds():
    agg = Aggregator()
    agg.add({"kind": "agent", "ts": T0, "source": "dns", "lost": 5})
    agg.add({"kind": "agent", "ts": T0 + 60 * S, "source": "dns", "lost": 1})
    losses = agg.agent_losses()
    assert (losses["window_s"], losses["lost"], losses["total"]) == (60, 1, 6)


def test_process_activity_counts_its_events():
    agg = Aggregator()
    for _ in range(3):
        agg.add(ev("lookup", 0, latency_ns=5))
    agg.add(ev("connect", 0))
    assert agg.processes.series[(10, "app")].activity == 4


def test_slowest_lookups_rank_latencies_given_as_floats():
    # latencies read back from JSON may be floats: ranked all the same
    agg = Aggregator()
    for name, ns in (("a", 1.5e9), ("b", 2.5e9), ("c", 0.5e9)):
        agg.add(ev("lookup", 0, name=name, latency_ns=ns))
    assert [s["name"] for s in agg.process_detail(10)["slowest"]] == ["b", "a", "c"]


def test_without_lookup_events_the_slowest_are_gai_calls_never_dns_answers():
    agg = Aggregator()
    agg.add(ev("gai", 0, name="call", latency_ns=2 * S))
    agg.add(ev("dns", 0, server="10.0.0.9", rcode="NOERROR", latency_ns=3 * S, name="answer"))
    assert [s["name"] for s in agg.process_detail(10)["slowest"]] == ["call"]
