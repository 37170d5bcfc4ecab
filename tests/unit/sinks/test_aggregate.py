"""Aggregator: windows, log-bucket percentiles, bounded tables with an 'other' series."""

from __future__ import annotations

import random

from dnstrace.latency import Histogram, bucket_of, bucket_upper_ns
from dnstrace.sinks.aggregate import MAX_BREAKDOWN, Aggregator

S = 1_000_000_000
T0 = 1_700_000_000 * S


def ev(kind, t, pid=10, comm="app", **fields):
    return {"kind": kind, "ts": T0 + int(t * S), "pid": pid, "comm": comm, "container": fields.pop("container", ""),
            "pod": "", "namespace": "", **fields}


def test_histogram_quantiles_within_one_bucket_and_exact_max():
    rng = random.Random(1)
    values = [int(rng.lognormvariate(15, 2)) + 1 for _ in range(5000)]
    h = Histogram()
    for v in values:
        h.add(v)
    values.sort()
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        got = h.quantile(q)
        assert exact <= got <= exact * 2 ** (1 / 8) * 1.0001, (q, exact, got)
    assert h.max == values[-1] and h.quantile(1.0) == values[-1]
    assert bucket_upper_ns(bucket_of(5 * S)) >= 5 * S


def test_windows_per_process_and_container():
    agg = Aggregator()
    for i in range(20):  # 20 lookups over 20 s, 1 per second
        agg.add(ev("lookup", i, latency_ns=(5 * S if i % 2 else 2_000_000), error=None if i % 4 else "EAI_AGAIN",
                   container="c1"))
    agg.add(ev("dns", 19, server="10.0.0.9", answered=False, container="c1"))
    agg.add(ev("dns", 19, server="10.0.0.2", answered=True, rcode="NOERROR", tc=True, latency_ns=1000,
               container="c1"))
    agg.add(ev("syn_retry", 19, daddr="10.0.0.2", dport=53, retry=1, container="c1"))
    agg.add(ev("drop", 19, pid=0, comm="", reason="IP_RPFILTER", count=3))
    agg.tick(T0 + 19 * S)
    (row10,) = agg.rows("process", "10s")
    assert row10["lookups"] == 10 and row10["lookups_per_s"] == 1.0
    assert row10["max_ns"] == 5 * S and row10["p99_ns"] == 5 * S
    assert row10["unanswered"] == 1 and row10["unanswered_by_server"] == {"10.0.0.9": 1}
    assert row10["tc"] == 1 and row10["syn_retries_by_dest"] == {"10.0.0.2:53": 1}
    (row60,) = agg.rows("process", "1m")
    assert row60["lookups"] == 20 and row60["failures"] == 5
    (crow,) = agg.rows("container", "1m")
    assert crow["container"] == "c1" and crow["lookups"] == 20
    assert agg.node_view()["drops_by_reason"] == {"IP_RPFILTER": 3}
    servers = {r["server"]: r for r in agg.server_rows()}
    assert servers["10.0.0.9"]["unanswered"] == 1 and servers["10.0.0.2"]["answered"] == 1
    # a minute later everything has slid out of the window
    agg.tick(T0 + 120 * S)
    assert agg.rows("process", "1m") == [] and agg.stats()["processes"] == 0


def test_gai_counts_as_lookups_only_without_lookup_events():
    agg = Aggregator()
    agg.add(ev("gai", 1, latency_ns=1000))
    assert agg.rows("process", "1m")[0]["lookups"] == 1
    agg.add(ev("lookup", 1, latency_ns=1000))
    agg.add(ev("gai", 1, latency_ns=1000))
    assert agg.rows("process", "1m")[0]["lookups"] == 2


def test_memory_bounded_under_process_and_name_floods():
    agg = Aggregator(max_processes=100, max_servers=8)
    for pid in range(1, 2001):
        agg.add(ev("lookup", pid % 50, pid=pid, comm=f"p{pid}", latency_ns=1000, error=f"E{pid}"))
        agg.add(ev("dns", pid % 50, pid=pid, comm=f"p{pid}", server=f"10.0.{pid // 250}.{pid % 250}",
                   qname=f"n{pid}.example", answered=False))
    stats = agg.stats()
    assert stats["processes"] <= 100 and stats["process_evictions"] >= 1900
    assert stats["servers"] <= 8
    rows = agg.rows("process", "1m")
    assert sum(r["lookups"] for r in rows) == 2000  # nothing lost: evicted series fold into "other"
    other = next(r for r in rows if r["comm"] == "other")
    assert len(other["failures_by_error"]) <= MAX_BREAKDOWN + 1
    assert len(other["unanswered_by_server"]) <= MAX_BREAKDOWN + 1


def test_process_detail_keeps_slowest_lookups_with_attempts():
    agg = Aggregator()
    for i, lat in enumerate([1, 9, 3, 7, 5, 2, 8]):
        agg.add(ev("lookup", i, name=f"n{i}", latency_ns=lat * S,
                   attempts=[{"server": "10.0.0.9", "answered": False}], nameservers=["10.0.0.9", "10.0.0.2"]))
    detail = agg.process_detail(10)
    assert [s["latency_ns"] // S for s in detail["slowest"]] == [9, 8, 7, 5, 3]
    assert detail["nameservers"] == ["10.0.0.9", "10.0.0.2"]
    assert detail["slowest"][0]["attempts"][0]["server"] == "10.0.0.9"
    assert agg.process_detail(99) is None


def test_agent_losses_reach_the_top_status_line():
    from dnstrace.cli.top.model import TopModel
    from dnstrace.cli.top.view import TopView

    model = TopModel(host="n1")
    model.sinks.handle([ev("dns", 1, qname="a", server="10.0.0.2", answered=True, rcode="NOERROR",
                           latency_ns=1000)])
    view = TopView()
    lines = view.render(model.snapshot("process", "10s"), 120, 24)
    assert "AGENT LOST" not in "\n".join(lines)  # nothing lost: nothing said
    model.sinks.handle([ev("agent", 2, pid=1, comm="dnstrace", source="dns", losses={"ringbuf_lost": 1500},
                           lost=1500, dns_lost=1500),
                        ev("agent", 3, pid=1, comm="dnstrace", source="tcp", losses={"sampled_out": 20},
                           lost=20, dns_lost=0)])
    snap = model.snapshot("process", "10s")
    assert snap["agent_losses"]["lost"] == 1520 and snap["agent_losses"]["dns_lost"] == 1500
    assert snap["agent_losses"]["by_source"] == {"dns": 1500, "tcp": 20}
    status_line = view.render(snap, 120, 24)[-1]
    assert status_line.startswith("AGENT LOST 1520 records/60s (1500 DNS")
    # a minute later the window no longer has them; the total stays
    model.sinks.handle([ev("dns", 100, qname="a", server="10.0.0.2", answered=True, rcode="NOERROR")])
    later = model.snapshot("process", "10s")["agent_losses"]
    assert later["lost"] == 0 and later["total"] == 1520


def test_next_nameserver_counts_although_glibc_reuses_the_query_id():
    """glibc sends the same id to the next nameserver (flagged retransmit): that server still got a query."""
    agg = Aggregator()
    agg.add(ev("dns", 0, server="10.53.0.9", answered=False, qname="web", qtype="A"))
    agg.add(ev("dns", 1, server="10.53.0.2", answered=True, rcode="NOERROR", latency_ns=250_000, retransmit=True,
               qname="web", qtype="A"))
    agg.now_s = (T0 + 2 * S) // S
    servers = {row["server"]: row for row in agg.server_rows()}
    assert servers["10.53.0.2"]["queries"] == 1 and servers["10.53.0.2"]["answered"] == 1
    assert servers["10.53.0.9"]["unanswered"] == 1


def test_slowest_lookups_come_from_lookup_events_once_they_arrive():
    agg = Aggregator()
    agg.add(ev("lookup", 0, name="a", latency_ns=2 * S, attempts=[{"server": "10.0.0.9", "answered": False}]))
    agg.add(ev("gai", 0.1, name="a", latency_ns=2 * S))  # the same call, without its attempts
    detail = agg.process_detail(10)
    assert len(detail["slowest"]) == 1 and detail["slowest"][0]["attempts"]
