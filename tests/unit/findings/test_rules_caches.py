"""The cache rules one by one, on small recorded streams: thresholds, hops, causes behind a cache, wording.

Each rule function runs on a window built as the engine builds it (60 s), so whole findings can be
compared with literal expected values.
"""

from __future__ import annotations

from test_findings import S, ev
from test_rules_nameservers import window

from dnstrace.findings.model import Finding
from dnstrace.findings.rules.caches import cache_miss_storm, local_cache_upstream

APP_FIX = "Cache the answer: a node-local cache (nscd, systemd-resolved, NodeLocal DNSCache) or the application's own."


def asked(n, qname="db.internal", server="127.0.0.53", pid=9, comm="worker", step=0.5, **fields):
    return [ev("dns", i * step, pid=pid, comm=comm, qname=qname, qtype="A", server=server, answered=True,
               rcode="NOERROR", latency_ns=1000, sport=30000 + i, id=i, **fields) for i in range(n)]


# --- cache-miss-storm ---------------------------------------------------------------------


def test_cache_miss_storm_whole_finding_at_fifty_queries():
    events = asked(50, step=1.0) + asked(2, qname="other.test")
    events[0]["tc"] = True
    assert cache_miss_storm(window(events, now_ns=events[0]["ts"] + 59 * S)) == [Finding(
        "cache-miss-storm", "warning",
        "db.internal (A) was asked 50 times in 60 s (0.8/s, hop app -> 127.0.0.53, mostly by pid 9 (worker)): "
        "nothing between pid 9 (worker) and 127.0.0.53 caches it",
        {"qname": "db.internal", "qtype": "A", "queries": 50, "per_second": 0.83, "ttl": None,
         "servers": {"127.0.0.53": 50}, "hop": "app", "hops": {"app -> 127.0.0.53": 50}, "truncated": 1},
        APP_FIX, key="db.internal/A", pids=[9], comms=["worker"], containers=[])]


def test_cache_miss_storm_floors():
    assert cache_miss_storm(window(asked(49))) == []
    # retransmits and TCP queries are not asked again by the app
    again = asked(49) + [dict(q, retransmit=True, id=100 + i) for i, q in enumerate(asked(5))]
    assert cache_miss_storm(window(again)) == []
    tcp = asked(49) + [dict(q, proto="tcp", id=100 + i) for i, q in enumerate(asked(5))]
    assert cache_miss_storm(window(tcp)) == []
    # below 50, 0.8 per second of the window is the floor: 48 in 60 s
    assert [f.evidence["queries"] for f in cache_miss_storm(window(asked(48)), min_queries=10)] == [48]
    assert cache_miss_storm(window(asked(47)), min_queries=10) == []


def test_cache_miss_storm_folds_case_and_keeps_types_apart():
    mixed = asked(30) + asked(30, qname="DB.Internal")
    [f] = cache_miss_storm(window(mixed))
    assert f.evidence["qname"] == "db.internal" and f.evidence["queries"] == 60 and f.key == "db.internal/A"
    types = asked(30) + [dict(q, qtype="AAAA") for q in asked(30)]
    assert cache_miss_storm(window(types)) == []


def test_cache_miss_storm_against_the_ttl():
    # TTL 5 s over 60 s: 13 answers allowed, a storm from 4 times that (52)
    assert [f.evidence["ttl"] for f in cache_miss_storm(window(asked(52, ttl=5)))] == [5]
    assert cache_miss_storm(window(asked(51, ttl=5))) == []
    [f] = cache_miss_storm(window(asked(52, ttl=10) + asked(2, ttl=5) + asked(1, ttl=0)))
    assert f.evidence["ttl"] == 5
    assert "(0.9/s, hop app -> 127.0.0.53, mostly by pid 9 (worker)) although its TTL is 5 s: nothing" in f.summary


def test_nxdomain_storms_are_left_to_the_ndots_rule():
    half = asked(60)
    for q in half[30:]:
        q["rcode"] = "NXDOMAIN"
    assert [f.evidence["queries"] for f in cache_miss_storm(window(half))] == [60]
    more = half + [dict(half[-1], ts=half[-1]["ts"] + 1)]
    assert cache_miss_storm(window(more)) == []


def test_cache_hop_storm_blames_the_cache_and_counts_what_apps_asked_it():
    via = {"pid": 300, "comm": "dnsmasq", "program": "dnsmasq", "server": "127.0.0.1", "port": 53}
    app = asked(60, server="127.0.0.1", pid=42, comm="api")
    upstream = asked(60, server="10.53.0.2", pid=300, comm="dnsmasq")
    lookup = ev("lookup", 1, pid=42, comm="api", name="db.internal", latency_ns=1000, source="gai", via=via)
    [f] = cache_miss_storm(window(app + upstream + [lookup]))
    assert f == Finding(
        "cache-miss-storm", "warning",
        "db.internal (A) was asked upstream 60 times in 60 s (1.0/s, hop cache -> 10.53.0.2, mostly by pid 300 "
        "(dnsmasq)): the cache dnsmasq (pid 300) forwards it upstream to 10.53.0.2 every time instead of answering "
        "from cache (apps asked it 60 times)",
        {"qname": "db.internal", "qtype": "A", "queries": 60, "per_second": 1.0, "ttl": None,
         "servers": {"10.53.0.2": 60}, "hop": "cache", "hops": {"app -> 127.0.0.1": 60, "cache -> 10.53.0.2": 60},
         "truncated": 0},
        "Make dnsmasq cache the answer: look for answers it refuses to cache (truncated answers it retries over "
        "TCP, TTL 0 from the upstream, a cache size of 0) and raise its minimum TTL.",
        key="db.internal/A@10.53.0.2", pids=[300], comms=["dnsmasq"], containers=[])
    # a cache known by its pid only, with no app traffic seen: no count of apps
    renamed = [dict(q, comm="cachesrv") for q in upstream]
    [f] = cache_miss_storm(window(renamed + [lookup]))
    assert f.summary.endswith("forwards it upstream to 10.53.0.2 every time instead of answering from cache")
    # a DNS server known by its name only
    [f] = cache_miss_storm(window(upstream))
    assert f.evidence["hop"] == "cache"


def test_two_storming_hops_get_one_finding_each_keyed_by_server():
    events = asked(60, server="10.0.0.1") + asked(60, server="10.0.0.2", pid=10, comm="other")
    found = cache_miss_storm(window(events))
    assert sorted(f.key for f in found) == ["db.internal/A@10.0.0.1", "db.internal/A@10.0.0.2"]
    # one hop storming, the other below the floor
    events = asked(60, server="10.0.0.1") + asked(49, server="10.0.0.2", pid=10, comm="other")
    assert [f.key for f in cache_miss_storm(window(events))] == ["db.internal/A"]


# --- local-cache-upstream -------------------------------------------------------------------

VIA = {"pid": 300, "comm": "unbound", "program": "unbound", "server": "127.0.0.1", "port": 53}


def through_cache(t, latency_ns=10_000_000, error=None, via=None, pid=4711, comm="checkout-api", **fields):
    return ev("lookup", t, pid=pid, comm=comm, name="web.example.test", latency_ns=latency_ns, error=error,
              source="gai", via=dict(via or VIA), **fields)


def syn(t, pid=300, comm="unbound", daddr="10.53.0.2", dport=53, **fields):
    return ev("syn_retry", t, pid=pid, comm=comm, daddr=daddr, dport=dport, **fields)


def test_local_cache_upstream_thresholds_and_severity():
    fast = [through_cache(i) for i in range(4)]
    # two slow or failed of four: critical (half); the slow one at exactly 0.5 s counts
    events = ([through_cache(0, latency_ns=500_000_000), through_cache(1, latency_ns=None, error="EAI_AGAIN")]
              + fast[2:] + [syn(2)])
    [f] = local_cache_upstream(window(events))
    assert f.severity == "critical" and f.evidence["slow_or_failed"] == 2 and f.evidence["lookups"] == 4
    assert "(EAI_AGAIN x1; median 500.0ms)" in f.summary
    # two of five: a warning
    [f] = local_cache_upstream(window(events + [through_cache(5)]))
    assert f.severity == "warning"
    # one only, or just under 0.5 s, or NODATA (NOERROR): nothing
    assert local_cache_upstream(window([through_cache(0, error="EAI_AGAIN")] + fast[1:] + [syn(2)])) == []
    under = [through_cache(0, latency_ns=499_999_999), through_cache(1, error="EAI_AGAIN")] + fast[2:]
    assert local_cache_upstream(window(under + [syn(2)])) == []
    nodata = [through_cache(i, error=e) for i, e in enumerate(("NOERROR", "", "EAI_NONAME", "EAI_NONAME"))]
    [f] = local_cache_upstream(window(nodata))
    assert f.evidence["slow_or_failed"] == 2 and f.evidence["errors"] == {"EAI_NONAME": 2}
    assert "failed or were slow (EAI_NONAME x2; median 10.0ms)" in f.summary
    # lookups without a cache pid are not through a cache
    assert local_cache_upstream(window([through_cache(i, error="EAI_AGAIN", via={"server": "127.0.0.1"})
                                        for i in range(3)])) == []


def test_syn_retransmits_of_the_cache_are_the_cause():
    events = [through_cache(i, latency_ns=2 * S, error="EAI_AGAIN", container="shop") for i in range(3)]
    events += [syn(1, count=3), syn(2), syn(3, pid=301, daddr="10.53.0.3", dport=853),
               syn(4, pid=999, comm="other", dport=53), syn(5, dport=443)]
    [f] = local_cache_upstream(window(events))
    assert f == Finding(
        "local-cache-upstream", "critical",
        "3 of 3 lookups by pid 4711 (checkout-api, container shop) through the local cache unbound (pid 300, "
        "unbound) on 127.0.0.1 failed or were slow (EAI_AGAIN x3; median 2.00s): unbound's TCP connections to "
        "its upstream 10.53.0.2:53 are not answered (5 SYN retransmits in 60 s)",
        {"app_pid": 4711, "app_comm": "checkout-api", "cache": VIA, "lookups": 3, "slow_or_failed": 3,
         "median_ns": 2 * S, "upstream_attempts": 0, "errors": {"EAI_AGAIN": 3},
         "upstream_syn_retransmits": 5, "upstream": {"10.53.0.2:53": 2, "10.53.0.3:853": 1}},
        "Fix unbound's upstream hop, not the app: 10.53.0.2 drops TCP SYNs on port 53; allow TCP/53 from the "
        "cache to it, or let unbound ask over UDP (unbound.conf 'tcp-upstream: no'). Keep 'nameserver 127.0.0.1': "
        "the cache itself is not the fault.",
        key="4711/300/127.0.0.1", pids=[4711, 300], comms=["checkout-api", "unbound"], containers=["shop"],
        confidence="measured")


def test_a_cache_program_without_a_hint_gets_the_generic_advice():
    via = {"pid": 300, "comm": "mycache", "server": "127.0.0.1"}
    events = [through_cache(i, error="EAI_AGAIN", via=via) for i in range(2)] + [syn(1, comm="mycache")]
    [f] = local_cache_upstream(window(events))
    assert "or let mycache ask over UDP (its upstream protocol setting)." in f.fix
    assert f.summary.startswith("2 of 2 lookups by pid 4711 (checkout-api) through the local cache mycache (pid 300, "
                                "mycache) on 127.0.0.1 failed or were slow (EAI_AGAIN x2; median 10.0ms): ")
    assert f.evidence["median_ns"] == 10_000_000
    quiet = [through_cache(i, error="EAI_AGAIN", via=via) for i in range(2)]
    [f] = local_cache_upstream(window(quiet))
    assert f.fix.startswith("Look at mycache's upstream and logs (its config): the app waits on it.")
    assert f.severity == "warning" and f.confidence == "wire"


def test_at_most_three_errors_are_shown():
    errors = ["E1", "E1", "E1", "E1", "E2", "E2", "E2", "E3", "E3", "E4"]
    events = [through_cache(i, error=e, latency_ns=None) for i, e in enumerate(errors)]
    [f] = local_cache_upstream(window(events))
    assert "failed or were slow (E1 x4, E2 x3, E3 x2); nothing failing" in f.summary
    assert f.evidence["median_ns"] is None and f.evidence["errors"] == {"E1": 4, "E2": 3, "E3": 2, "E4": 1}


def cache_query(t, server, pid=300, comm="unbound", **fields):
    base = {"answered": True, "rcode": "NOERROR", "latency_ns": 1_000_000}
    base.update(fields)
    return ev("dns", t, pid=pid, comm=comm, qname="web.example.test", qtype="A", server=server, sport=50000 + t,
              id=t, **base)


def slow_lookups(n=2):
    return [through_cache(i, latency_ns=S) for i in range(n)]


def test_a_dead_upstream_of_the_cache_is_the_cause():
    events = slow_lookups() + [cache_query(1, "10.53.0.9", answered=False), cache_query(2, "10.53.0.9", answered=False),
                               cache_query(3, "10.53.0.8", answered=False), cache_query(4, "10.53.0.2")]
    [f] = local_cache_upstream(window(events))
    assert f.summary.endswith(": unbound's upstream 10.53.0.9 never answered 2 of its queries")
    assert f.fix.startswith("Fix or replace the upstream 10.53.0.9 of unbound (forward-addr in unbound.conf).")
    assert f.evidence["upstream_unanswered"] == {"10.53.0.9": 2, "10.53.0.8": 1}
    # an upstream that answered some is not dead; one lost query is not enough
    answered_some = events + [cache_query(5, "10.53.0.9")]
    [f] = local_cache_upstream(window(answered_some))
    assert "never answered" not in f.summary
    # upstream queries carried inside the lookups' attempts count too
    attempt = {"upstream": [{"server": "10.53.0.7", "answered": False}, {"server": "10.53.0.7", "answered": False}]}
    carried = [through_cache(i, latency_ns=S, attempts=[attempt]) for i in range(2)]
    [f] = local_cache_upstream(window(carried))
    assert f.evidence["upstream_attempts"] == 4 and f.evidence["upstream_unanswered"] == {"10.53.0.7": 4}
    other_program = {"pid": 300, "comm": "mycache", "server": "127.0.0.1"}
    [f] = local_cache_upstream(window([through_cache(i, latency_ns=S, attempts=[attempt], via=other_program)
                                       for i in range(2)]))
    assert f.fix.startswith("Fix or replace the upstream 10.53.0.7 of mycache (its upstream setting).")


def test_servfail_and_slow_upstreams_of_the_cache():
    servfail = slow_lookups() + [cache_query(1, "10.53.0.2", rcode="SERVFAIL"),
                                 cache_query(2, "10.53.0.3", rcode="SERVFAIL"),
                                 cache_query(3, "10.53.0.3", rcode="SERVFAIL")]
    [f] = local_cache_upstream(window(servfail))
    assert f.summary.endswith(": unbound's upstream 10.53.0.3 answered SERVFAIL 2 times")
    assert f.evidence["upstream_servfail"] == {"10.53.0.3": 2, "10.53.0.2": 1}
    assert f.fix.startswith("Find out why 10.53.0.3 fails for these names (its own upstream, DNSSEC); unbound only "
                            "relays it.")
    slow = slow_lookups() + [cache_query(1, "10.53.0.2", latency_ns=300_000_000),
                             cache_query(2, "10.53.0.2", latency_ns=400_000_000)]
    [f] = local_cache_upstream(window(slow))
    assert f.summary.endswith(": unbound's upstream answers take 350.0ms")
    assert f.evidence["upstream_median_ns"] == 350_000_000 and f.severity == "critical"
    assert f.fix.startswith("Find out why unbound's upstream is slow, or give it a faster one.")
    # one slow answer, or a median under 300 ms, or unanswered ones: no cause found
    one = slow[:3]
    assert "nothing failing was seen" in local_cache_upstream(window(one))[0].summary
    under = slow_lookups() + [cache_query(1, "10.53.0.2", latency_ns=299_999_999),
                              cache_query(2, "10.53.0.2", latency_ns=299_999_999)]
    assert "nothing failing was seen" in local_cache_upstream(window(under))[0].summary


def test_exactly_fifty_queries_in_the_window_are_enough():
    [f] = cache_miss_storm(window(asked(50)))
    assert f.evidence["queries"] == 50 and f.evidence["per_second"] == 0.83


def test_retransmits_and_tcp_queries_of_a_frequent_name_are_not_counted():
    events = asked(50) + [dict(q, retransmit=True) for q in asked(5)] + [dict(q, proto="tcp") for q in asked(5)]
    [f] = cache_miss_storm(window(events))
    assert f.evidence["queries"] == 50 and f.evidence["hops"] == {"app -> 127.0.0.53": 50}


def test_a_hop_storms_from_point_eight_queries_per_second():
    events = asked(48, server="10.0.0.1") + asked(12, server="10.0.0.2", pid=10, comm="other")
    [f] = cache_miss_storm(window(events), min_queries=10)
    assert f.key == "db.internal/A" and f.evidence["hops"] == {"app -> 10.0.0.1": 48, "app -> 10.0.0.2": 12}
    assert f.summary.startswith("db.internal (A) was asked 48 times in 60 s (0.8/s, hop app -> 10.0.0.1, ")


def test_the_cache_named_is_the_one_of_the_latest_lookup():
    old = {"pid": 300, "comm": "unbound", "program": "unbound", "server": "127.0.0.1"}
    new = dict(old, program="NodeLocal DNSCache", comm="node-cache")
    events = [through_cache(0, error="EAI_AGAIN", via=old), through_cache(1, error="EAI_AGAIN", via=old),
              through_cache(2, error="EAI_AGAIN", via=new)]
    [f] = local_cache_upstream(window(events))
    assert "through the local cache NodeLocal DNSCache (pid 300, node-cache) on 127.0.0.1" in f.summary
    assert f.comms == ["checkout-api", "node-cache"] and f.evidence["cache"] == new


def test_the_five_busiest_upstreams_are_listed_and_ipv6_ports_split_off():
    events = [through_cache(i, error="EAI_AGAIN") for i in range(2)]
    events += [syn(1, daddr="fd00::1", count=7)] + [syn(2 + i, daddr=f"10.53.0.{i}") for i in range(1, 7)]
    events += [syn(9, daddr="fd00::1")]
    [f] = local_cache_upstream(window(events))
    assert f.evidence["upstream"] == {"fd00::1:53": 2, "10.53.0.1:53": 1, "10.53.0.2:53": 1, "10.53.0.3:53": 1,
                                      "10.53.0.4:53": 1}
    assert f.evidence["upstream_syn_retransmits"] == 14
    assert f.fix.startswith("Fix unbound's upstream hop, not the app: fd00::1 drops TCP SYNs on port 53; ")


def test_the_five_most_failing_upstreams_are_listed():
    lost = [cache_query(t, f"10.53.0.{t}", answered=False) for t in range(1, 7) for _ in range(2)]
    lost = [dict(q, id=i, sport=i) for i, q in enumerate(lost)] + [cache_query(20, "10.53.0.1", answered=False)]
    [f] = local_cache_upstream(window(slow_lookups() + lost))
    assert f.evidence["upstream_unanswered"] == {"10.53.0.1": 3, "10.53.0.2": 2, "10.53.0.3": 2, "10.53.0.4": 2,
                                                 "10.53.0.5": 2}
    failed = [cache_query(t, f"10.53.0.{t}", rcode="SERVFAIL") for t in range(1, 7)]
    failed.append(cache_query(20, "10.53.0.6", rcode="SERVFAIL"))
    [f] = local_cache_upstream(window(slow_lookups() + failed))
    assert f.evidence["upstream_servfail"] == {"10.53.0.6": 2, "10.53.0.1": 1, "10.53.0.2": 1, "10.53.0.3": 1,
                                               "10.53.0.4": 1}
    assert f.summary.endswith(": unbound's upstream 10.53.0.6 answered SERVFAIL 2 times")
    assert f.summary == ("2 of 2 lookups by pid 4711 (checkout-api) through the local cache unbound (pid 300, unbound) "
                         "on 127.0.0.1 failed or were slow (median 1.00s): unbound's upstream 10.53.0.6 answered "
                         "SERVFAIL 2 times")


def test_an_upstream_median_of_exactly_300_ms_is_slow():
    slow = slow_lookups() + [cache_query(1, "10.53.0.2", latency_ns=300_000_000),
                             cache_query(2, "10.53.0.2", latency_ns=300_000_000)]
    [f] = local_cache_upstream(window(slow))
    assert f.evidence["upstream_median_ns"] == 300_000_000


def test_each_cache_rule_goes_on_past_a_name_or_app_it_skips():
    # NXDOMAIN storm first, then a storm the rule reports
    nx = [dict(q, rcode="NXDOMAIN") for q in asked(60, qname="nx.test")]
    assert [f.key for f in cache_miss_storm(window(nx + asked(60)))] == ["db.internal/A"]
    # an app hop to a local cache first (its cache's own hop is judged), then another app's storm
    via = {"pid": 300, "comm": "dnsmasq", "program": "dnsmasq", "server": "127.0.0.1", "port": 53}
    events = (asked(60, server="127.0.0.1", pid=42, comm="api")
              + [ev("lookup", 1, pid=42, comm="api", name="db.internal", latency_ns=1000, source="gai", via=via)]
              + asked(60, server="10.0.0.2", pid=10, comm="other"))
    assert [f.key for f in cache_miss_storm(window(events))] == ["db.internal/A@10.0.0.2"]
    # local-cache-upstream: an app whose lookups are fine, then one whose lookups fail
    events = [through_cache(i, pid=1, comm="fine") for i in range(3)]
    events += [through_cache(i, error="EAI_AGAIN") for i in range(3)]
    assert [f.key for f in local_cache_upstream(window(events))] == ["4711/300/127.0.0.1"]


def test_of_two_dead_upstreams_the_one_with_more_lost_queries_is_named():
    events = slow_lookups() + [cache_query(t, "10.53.0.9", answered=False) for t in range(1, 4)]
    events += [cache_query(t, "10.53.0.8", answered=False) for t in range(4, 6)]
    [f] = local_cache_upstream(window(events))
    assert f.summary.endswith(": unbound's upstream 10.53.0.9 never answered 3 of its queries")
    assert f.fix.startswith("Fix or replace the upstream 10.53.0.9 of unbound ")


def test_upstream_answers_without_a_latency_or_unanswered_queries_are_not_timed():
    events = slow_lookups() + [cache_query(1, "10.53.0.2", latency_ns=None), cache_query(2, "10.53.0.2"),
                               cache_query(3, "10.53.0.2"),
                               cache_query(4, "10.53.0.2", answered=False, latency_ns=2 * S)]
    [f] = local_cache_upstream(window(events))
    assert "nothing failing was seen" in f.summary and "upstream_median_ns" not in f.evidence
