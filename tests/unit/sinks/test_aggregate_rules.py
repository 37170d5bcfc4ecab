"""Aggregator counting rules with literal expectations: retransmits, servers, drops, losses, windows."""

from __future__ import annotations

from dnstrace.sinks.aggregate import Aggregator

S = 1_000_000_000
T0 = 1_700_000_000 * S


def ev(kind, t, pid=10, comm="app", **fields):
    return {"kind": kind, "ts": T0 + int(t * S), "pid": pid, "comm": comm, "container": fields.pop("container", ""),
            "pod": "", "namespace": "", **fields}


def only_row(agg, **kw):
    rows = agg.rows(**kw)
    assert len(rows) == 1, rows
    return rows[0]


def test_retransmitted_query_counts_once_per_process_but_every_send_per_server():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.9", answered=False))
    agg.add(ev("dns", 0.5, server="10.0.0.9", answered=False, retransmit=True))
    agg.add(ev("dns", 1, server="10.0.0.9", answered=True, rcode="NOERROR", latency_ns=2000, retransmit=True))
    row = only_row(agg, view="10s")
    assert (row["queries"], row["unanswered"], row["rcodes"]) == (1, 1, {})
    # A server counts every query it was sent (glibc re-sends the same id to the next nameserver:
    # that is the next server's first query), answered or not.
    (server,) = agg.server_rows()
    assert (server["queries"], server["unanswered"], server["answered"], server["max_ns"]) == (3, 2, 1, 2000)
    assert agg.node_view()["queries"] == 1


def test_retransmit_over_tcp_fallback_still_counts_the_fallback():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.9", proto="tcp", tcp_fallback=True, retransmit=True))
    agg.add(ev("dns", 0, server="10.0.0.9", proto="udp", tcp_fallback=True, rcode="NOERROR"))
    row = only_row(agg)
    assert (row["tcp_fallback"], row["queries"]) == (1, 1)


def test_server_rows_count_answers_rcodes_tc_and_latency():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.2", rcode="NOERROR", latency_ns=1_000_000))
    agg.add(ev("dns", 0, server="10.0.0.2", rcode="SERVFAIL", tc=True, latency_ns=3_000_000))
    agg.add(ev("dns", 0, server="10.0.0.2", answered=False))
    (row,) = agg.server_rows()
    assert row["server"] == "10.0.0.2"
    assert (row["queries"], row["answered"], row["unanswered"], row["tc"]) == (3, 2, 1, 1)
    assert row["rcodes"] == {"NOERROR": 1, "SERVFAIL": 1}
    assert row["max_ns"] == 3_000_000 and row["p99_ns"] == 3_000_000
    proc = only_row(agg)
    assert (proc["queries"], proc["unanswered_by_server"], proc["tc"]) == (3, {"10.0.0.2": 1}, 1)
    assert proc["rcodes"] == {"NOERROR": 1, "SERVFAIL": 1}


def test_dns_without_server_makes_no_server_row():
    agg = Aggregator()
    agg.add(ev("dns", 0, rcode="NOERROR"))
    assert agg.server_rows() == []
    assert only_row(agg)["queries"] == 1


def test_same_port_pairs_syn_retries_connects_and_drops():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.9", same_port_pair=True, rcode="NOERROR"))
    agg.add(ev("syn_retry", 0, daddr="10.0.0.5", dport=443))
    agg.add(ev("syn_retry", 0, daddr="10.0.0.5", dport=443))
    agg.add(ev("connect", 0))
    agg.add(ev("drop", 0, reason="IP_RPFILTER", count=3))
    agg.add(ev("drop", 0, reason="IP_RPFILTER"))
    row = only_row(agg)
    assert row["same_port"] == 1
    assert (row["syn_retries"], row["syn_retries_by_dest"]) == (2, {"10.0.0.5:443": 2})
    assert (row["drops"], row["drops_by_reason"]) == (4, {"IP_RPFILTER": 4})


def test_connects_alone_make_a_row():
    agg = Aggregator()
    agg.add(ev("connect", 0))
    row = only_row(agg)
    assert (row["lookups"], row["queries"]) == (0, 0)


def test_gai_counts_until_lookup_events_arrive_then_only_lookups():
    agg = Aggregator()
    agg.add(ev("gai", 0, latency_ns=1000))
    assert only_row(agg)["lookups"] == 1
    agg.add(ev("lookup", 0, latency_ns=1000))
    agg.add(ev("gai", 0, latency_ns=1000))  # now the lookup join counts it
    assert only_row(agg)["lookups"] == 2


def test_failures_by_error_and_what_is_not_a_failure():
    # events.is_failed: any error but null is a failure; "NOERROR" is a wire lookup answered without an address
    agg = Aggregator()
    for error in ("EAI_AGAIN", "EAI_AGAIN", "EAI_NONAME", None, "NOERROR", None):
        agg.add(ev("lookup", 0, latency_ns=10, error=error))
    row = only_row(agg)
    assert (row["lookups"], row["failures"]) == (6, 4)
    assert row["failures_by_error"] == {"EAI_AGAIN": 2, "EAI_NONAME": 1, "NOERROR": 1}


def test_lookup_without_latency_counts_but_adds_no_percentile():
    agg = Aggregator()
    agg.add(ev("lookup", 0, latency_ns=None))
    row = only_row(agg)
    assert (row["lookups"], row["p50_ns"], row["max_ns"]) == (1, None, None)


def test_unknown_kinds_are_ignored_and_counted():
    agg = Aggregator()
    agg.add(ev("mystery", 0))
    agg.add(ev("lookup", 0, latency_ns=5))
    assert agg.stats()["ignored"] == 1 and agg.stats()["events"] == 2
    assert agg.stats()["processes"] == 1


def test_events_without_pid_count_for_the_node_only():
    agg = Aggregator()
    agg.add(ev("drop", 0, pid=0, reason="NETFILTER_DROP"))
    assert agg.rows() == []
    assert agg.node_view()["drops_by_reason"] == {"NETFILTER_DROP": 1}


def test_container_rows_sum_their_processes():
    agg = Aggregator()
    agg.add(ev("lookup", 0, pid=1, latency_ns=5, container="c1"))
    agg.add(ev("lookup", 0, pid=2, latency_ns=5, container="c1"))
    agg.add(ev("lookup", 0, pid=3, latency_ns=5))
    (row,) = agg.rows(by="container")
    assert (row["container"], row["lookups"]) == ("c1", 2)
    assert len(agg.rows(by="process")) == 3


def test_views_cover_exactly_their_window():
    agg = Aggregator()
    agg.add(ev("lookup", 0, latency_ns=5))
    agg.add(ev("lookup", 50, latency_ns=5))
    agg.add(ev("lookup", 59, latency_ns=5))
    assert only_row(agg, view="1s")["lookups"] == 1
    assert only_row(agg, view="10s")["lookups"] == 2
    assert only_row(agg, view="1m")["lookups"] == 3
    assert only_row(agg, view="10s")["lookups_per_s"] == 0.2
    agg.tick(T0 + 60 * S)  # second 0 leaves the minute
    assert only_row(agg, view="1m")["lookups"] == 2


def test_conntrack_counters_and_latest_table_size():
    agg = Aggregator()
    agg.add({"kind": "conntrack", "ts": T0, "netns": "4026531840", "insert_failed": 2, "drop": 1,
             "early_drop": 0, "count": 10, "max": 262144})
    agg.add({"kind": "conntrack", "ts": T0 + S, "netns": "4026531840", "insert_failed": 1, "count": 12,
             "max": 262144})
    node = agg.node_view()
    assert node["conntrack"] == {"insert_failed": 3, "drop": 1}
    assert node["conntrack_tables"] == {"4026531840": {"count": 12, "max": 262144}}


def test_agent_losses_window_and_totals():
    agg = Aggregator()
    agg.add({"kind": "agent", "ts": T0, "source": "dns", "lost": 5, "dns_lost": 5})
    agg.add({"kind": "agent", "ts": T0 + 30 * S, "source": "gai", "lost": 2})
    agg.add({"kind": "agent", "ts": T0 + 61 * S, "source": "dns", "lost": 1, "dns_lost": 1})
    losses = agg.agent_losses(60)
    assert losses == {"window_s": 60, "lost": 3, "dns_lost": 1, "total": 8, "by_source": {"dns": 6, "gai": 2}}


def test_slowest_five_lookups_kept_slowest_first():
    agg = Aggregator()
    for i, ms in enumerate([5, 1, 9, 3, 7, 2, 8]):
        agg.add(ev("lookup", i, latency_ns=ms * 1_000_000, name=f"n{ms}", attempts=[{"server": "10.0.0.9"}] * 10))
    detail = agg.process_detail(10)
    assert [s["name"] for s in detail["slowest"]] == ["n9", "n8", "n7", "n5", "n3"]
    assert all(len(s["attempts"]) == 8 for s in detail["slowest"])
    assert detail["servers"] == {"10.0.0.9": {"unanswered": 0, "tc": 0}}
    assert agg.process_detail(11) is None


def test_process_detail_shows_the_resolv_conf_it_sees():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.9", answered=False, nameservers=["10.0.0.9"], search=["svc.local"],
               resolv_options=["ndots:5"]))
    detail = agg.process_detail(10)
    assert (detail["nameservers"], detail["search"], detail["resolv_options"]) == \
        (["10.0.0.9"], ["svc.local"], ["ndots:5"])
    assert detail["servers"] == {"10.0.0.9": {"unanswered": 1, "tc": 0}}


# --- series, tables and histograms at their edges ---------------------------------

from dnstrace.latency import Histogram, bucket_of  # noqa: E402
from dnstrace.sinks.aggregate import Series, Table  # noqa: E402


def test_late_event_lands_in_its_own_second_or_the_oldest_kept():
    s = Series("k")
    s.slot(100).lookups += 1
    s.slot(103).lookups += 10
    s.slot(101).lookups += 100  # late, but no slot 101: counted in the newest
    s.slot(100).lookups += 1000  # late, slot 100 exists
    assert [(sec, slot.lookups) for sec, slot in s.slots] == [(100, 1001), (103, 110)]
    assert s.last_s == 103


def test_a_series_keeps_exactly_sixty_slots():
    s = Series("k")
    for second in range(61):
        s.slot(second).lookups += 1
    assert [sec for sec, _ in s.slots][0] == 1 and len(s.slots) == 60


def test_expire_drops_slots_older_than_sixty_seconds():
    s = Series("k")
    s.slot(0).lookups += 1
    s.slot(1).lookups += 1
    s.expire(60)
    assert [sec for sec, _ in s.slots] == [1]


def test_table_evicts_the_least_active_tenth_into_other():
    t = Table("process", 20)
    for key in range(20):
        series = t.get(key)
        series.activity = key + 1
        series.slot(5).lookups += 1
    t.get("new")
    assert t.evictions == 2
    assert set(t.series) == set(range(2, 20)) | {"new"}
    assert t.other.activity == 1 + 2
    assert [(sec, slot.lookups) for sec, slot in t.other.slots] == [(5, 2)]
    assert list(t.all())[-1] is t.other


def test_small_table_evicts_at_least_one():
    t = Table("server", 3)
    for key in "abc":
        t.get(key)
    t.get("d")
    assert t.evictions == 1 and len(t.series) == 3


def test_table_info_updates_only_with_real_values():
    t = Table("process", 10)
    t.get(1, {"comm": "app", "container": "c1"})
    t.get(1, {"comm": "app", "container": "", "pod": None})
    assert t.get(1).info == {"comm": "app", "container": "c1", "pod": None}
    t.get(1, {"container": "c2"})
    assert t.get(1).info["container"] == "c2"


def test_breakdowns_keep_sixteen_keys_and_fold_the_rest_into_other():
    agg = Aggregator()
    for i in range(18):
        agg.add(ev("drop", 0, reason=f"R{i}", count=2))
    row = only_row(agg)
    assert len(row["drops_by_reason"]) == 17
    assert row["drops_by_reason"]["other"] == 4 and row["drops"] == 36


def test_histogram_sum_count_and_small_quantiles():
    h = Histogram()
    for v in (1_000, 2_000, 4_000, 8_000):
        h.add(v)
    assert (h.count, h.sum, h.max) == (4, 15_000, 8_000)
    # upper edges of the grid buckets holding 1000, 2000 and 4000 ns; the top rank reads the exact max
    assert h.quantiles((0.25, 0.5, 1.0)) == [1_024, 2_048, 8_000]
    assert h.quantile(0.5) == 2_048 and h.quantile(0.75) == 4_096
    assert Histogram().quantile(0.5) is None
    merged = Histogram()
    merged.merge(h)
    merged.merge(Histogram())
    assert (merged.count, merged.sum, merged.max, merged.quantile(0.5)) == (4, 15_000, 8_000, 2_048)


def test_bucket_edges():
    assert bucket_of(0) == 0 and bucket_of(1) == 0 and bucket_of(2) == 8  # one octave = 8 buckets
    assert bucket_of(1_024) == 80 and bucket_of(1_023) == 79  # lower edges are in the bucket, upper edges not
    assert bucket_of(2 ** 63 - 1) == 504  # the largest int64 latency (log2 of it rounds to 63.0)


def test_agent_event_without_lost_counts_zero_and_sources_are_bounded():
    agg = Aggregator()
    agg.add({"kind": "agent", "ts": T0, "source": "dns"})
    assert agg.agent_losses()["by_source"] == {"dns": 0}
    for i in range(70):
        agg.add({"kind": "agent", "ts": T0, "source": f"s{i}", "lost": 1})
    assert len(agg.agent_losses()["by_source"]) == 64


def test_conntrack_without_count_keeps_no_table_size():
    agg = Aggregator()
    agg.add({"kind": "conntrack", "ts": T0, "netns": "1", "insert_failed": 1})
    assert agg.node_view()["conntrack_tables"] == {}


def test_server_row_tc_only_when_truncated():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.2", rcode="NOERROR", tc=False))
    (row,) = agg.server_rows()
    assert row["tc"] == 0


def test_connect_counts_one_and_lookups_per_second_rounds_to_two_digits():
    agg = Aggregator()
    agg.add(ev("connect", 0))
    for _ in range(1):
        agg.add(ev("lookup", 0, latency_ns=5))
    row = only_row(agg, view="1m")
    assert row["lookups_per_s"] == 0.02
    assert agg.rows(view="1m")[0]["lookups"] == 1
    detail = agg.process_detail(10)
    assert detail["lookups"] == 1


def test_process_detail_covers_the_whole_minute():
    agg = Aggregator()
    agg.add(ev("lookup", 0, latency_ns=5))
    agg.add(ev("lookup", 59, latency_ns=5))
    assert agg.process_detail(10)["lookups"] == 2
    assert agg.process_detail(10)["lookups_per_s"] == 0.03


def test_events_in_the_same_second_share_now():
    agg = Aggregator()
    agg.add(ev("lookup", 5, latency_ns=5))
    agg.add(ev("lookup", 5, latency_ns=5))
    assert agg.now_s == (T0 // S) + 5
    assert only_row(agg, view="1s")["lookups"] == 2


def test_row_and_server_percentiles_are_the_bucket_edges():
    agg = Aggregator()
    # 100 lookups and answers 1 ns below 2^20..2^23 ns (bucket upper edges): x50, x40, x9, x1
    for ns, n in ((2**20 - 1, 50), (2**21 - 1, 40), (2**22 - 1, 9), (2**23 - 1, 1)):
        for _ in range(n):
            agg.add(ev("lookup", 0, latency_ns=ns))
            agg.add(ev("dns", 0, server="10.0.0.2", rcode="NOERROR", latency_ns=ns))
    row = only_row(agg)
    assert (row["p50_ns"], row["p90_ns"], row["p99_ns"], row["max_ns"]) == (2**20, 2**21, 2**22, 2**23 - 1)
    (server,) = agg.server_rows()
    assert (server["p50_ns"], server["p99_ns"], server["max_ns"]) == (2**20, 2**22, 2**23 - 1)


def test_tcp_fallback_counts_only_tcp_queries():
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.0.0.9", proto="udp", tcp_fallback=True, rcode="NOERROR"))
    assert only_row(agg)["tcp_fallback"] == 0
    agg.add(ev("dns", 0, server="10.0.0.9", proto="tcp", tcp_fallback=True, rcode="NOERROR"))
    assert only_row(agg)["tcp_fallback"] == 1
