"""Findings rules on recorded event streams: each rule fires on its incident and stays quiet otherwise."""

from __future__ import annotations

from dnstrace.findings.engine import FindingsEngine, evaluate
from dnstrace.findings.registry import RULE_IDS

S = 1_000_000_000
T0 = 1_700_000_000 * S


def ev(kind, t, **fields):
    base = {"kind": kind, "ts": T0 + int(t * S), "host": "n1", "pid": 4711, "tid": 4711, "comm": "kafka-writer",
            "container": "", "pod": "", "namespace": ""}
    base.update(fields)
    return base


RESOLV = {"nameservers": ["10.100.0.9", "10.100.0.2"], "search": [], "resolv_options": []}


def dead_nameserver_stream(n=6):
    events = []
    for i in range(n):
        t = i * 6
        events.append(ev("dns", t, qname="kafka.service", qtype="A", server="10.100.0.9", answered=False,
                         rcode=None, sport=40000 + i, id=i, **RESOLV))
        events.append(ev("dns", t + 5, qname="kafka.service", qtype="A", server="10.100.0.2", answered=True,
                         rcode="NOERROR", latency_ns=2_000_000, sport=41000 + i, id=i, **RESOLV))
        events.append(ev("lookup", t + 5, name="kafka.service", latency_ns=5_002_000_000, error=None,
                         source="gai", **RESOLV))
    return events


def rules_of(findings):
    return {f.rule for f in findings}


def test_dead_nameserver_names_server_position_and_process():
    findings = evaluate(dead_nameserver_stream())
    dead = [f for f in findings if f.rule == "dead-nameserver"]
    assert len(dead) == 1
    f = dead[0]
    assert f.severity == "critical"
    assert "pid 4711 (kafka-writer)" in f.summary
    assert "10.100.0.9 (first in its resolv.conf) never answered 6 queries" in f.summary
    assert "10.100.0.2 answered" in f.summary
    assert "5.00s" in f.summary
    assert f.evidence["resolv_conf_line"] == "nameserver 10.100.0.9"
    assert f.pids == [4711] and "nameserver 10.100.0.9" in f.fix
    assert "timeout-multiple-latency" in rules_of(findings)


def test_dead_nameserver_quiet_when_server_answers_some():
    events = dead_nameserver_stream()
    events.append(ev("dns", 40, qname="x", qtype="A", server="10.100.0.9", answered=True, rcode="NOERROR",
                     latency_ns=1_000_000))
    assert "dead-nameserver" not in rules_of(evaluate(events))


def test_single_lost_query_is_not_a_dead_nameserver():
    assert "dead-nameserver" not in rules_of(evaluate(dead_nameserver_stream(1)))


def test_old_events_outside_window_do_not_fire():
    events = dead_nameserver_stream()
    late = ev("dns", 500, qname="a", qtype="A", server="10.100.0.2", answered=True, rcode="NOERROR", latency_ns=1)
    assert "dead-nameserver" not in rules_of(evaluate(events + [late]))


def test_timeout_multiples_use_configured_timeout_and_ignore_random_slowness():
    opts = {"nameservers": ["10.0.0.1"], "resolv_options": ["timeout:2"], "search": []}
    hits = [ev("lookup", i, name="a", latency_ns=int(lat * S), error=None, **opts)
            for i, lat in enumerate([2.02, 4.05, 2.0, 0.01])]
    f = [x for x in evaluate(hits) if x.rule == "timeout-multiple-latency"]
    assert f and "2 s resolver timeout" in f[0].summary and f[0].evidence["multiples"] == {1: 2, 2: 1}
    random_slow = [ev("lookup", i, name="a", latency_ns=int(lat * S), error=None, **opts)
                   for i, lat in enumerate([2.9, 3.1, 1.6, 2.8])]
    assert "timeout-multiple-latency" not in rules_of(evaluate(random_slow))


def test_slow_nameserver():
    events = [ev("dns", i, qname="a", qtype="A", server="10.0.0.5", answered=True, rcode="NOERROR",
                 latency_ns=800_000_000) for i in range(4)]
    assert "slow-nameserver" in rules_of(evaluate(events))
    fast = [dict(e, latency_ns=3_000_000) for e in events]
    assert "slow-nameserver" not in rules_of(evaluate(fast))


def truncation_stream(n):
    events = []
    for i in range(n):
        events.append(ev("dns", i * 0.5, pid=900, comm="dnsmasq", qname="web.service.consul", qtype="A",
                         server="10.0.0.8", dport=8600, answered=True, rcode="NOERROR", tc=True,
                         latency_ns=1_000_000, proto="udp", id=i))
        events.append(ev("dns", i * 0.5 + 0.01, pid=900, comm="dnsmasq", qname="web.service.consul", qtype="A",
                         server="10.0.0.8", dport=8600, answered=True, rcode="NOERROR", tc=False,
                         latency_ns=3_000_000, proto="tcp", tcp_fallback=True, id=i))
    return events


def test_truncated_not_cached_and_tcp_fallback():
    findings = evaluate(truncation_stream(8))
    rules = rules_of(findings)
    assert {"truncated-not-cached", "tcp-fallback"} <= rules
    f = next(f for f in findings if f.rule == "truncated-not-cached")
    assert "web.service.consul" in f.summary and "10.0.0.8" in f.summary and "dnsmasq" in f.summary
    assert f.evidence["tcp_fallbacks"] == 8
    assert not ({"truncated-not-cached", "tcp-fallback"} & rules_of(evaluate(truncation_stream(2))))


def test_truncation_rules_fire_from_five_repeats_and_say_who_caches():
    def tc(qname, server, n, comm="consul-client", pid=61):
        return [ev("dns", i * 0.5, pid=pid, comm=comm, qname=qname, qtype="A", server=server, answered=True,
                   rcode="NOERROR", tc=True, latency_ns=1000, proto="udp", id=i) for i in range(n)]

    found = evaluate(tc("four.test", "10.0.0.8", 4) + tc("five.test", "10.0.0.8", 5)
                     + tc("cached.test", "10.0.0.9", 5, comm="dnsmasq", pid=62))
    truncated = {f.evidence["qname"]: f for f in found if f.rule == "truncated-not-cached"}
    assert sorted(truncated) == ["cached.test", "five.test"]  # four repeats are not enough
    five = truncated["five.test"]
    assert five.summary.endswith("nothing caches the truncated answer, so every lookup goes to the server again "
                                 "(and 0 retries over TCP)")
    assert five.evidence["tcp_fallbacks"] == 0 and five.evidence["per_second"] == 0.08
    assert "dnsmasq does not cache truncated answers" in truncated["cached.test"].summary


def test_tcp_fallback_from_five_retries_with_servers_names_and_tcp_latency():
    def fallbacks(pid, comm, n, latency_ns=None):
        return [ev("dns", i * 0.5, pid=pid, comm=comm, qname=f"n{i % 6}.test", qtype="A", server=f"10.0.0.{i % 9}",
                   answered=True, rcode="NOERROR", latency_ns=latency_ns, proto="tcp", tcp_fallback=True, id=i)
                for i in range(n)]

    found = evaluate(fallbacks(41, "few", 4) + fallbacks(42, "app", 10, latency_ns=3_000_000)
                     + fallbacks(43, "quiet", 5))
    by_pid = {f.pids[0]: f for f in found if f.rule == "tcp-fallback"}
    assert sorted(by_pid) == [42, 43]
    app = by_pid[42]
    assert app.summary.endswith("after truncated UDP answers from 10.0.0.0, 10.0.0.1, 10.0.0.2 (TCP answers take "
                                "3.0ms)")
    assert len(app.evidence["servers"]) == 8 and len(app.evidence["qnames"]) == 5
    assert by_pid[43].summary.endswith("from 10.0.0.0, 10.0.0.1, 10.0.0.2")  # no TCP latency seen: none claimed


def test_rp_filter_reads_the_interface_its_address_and_packet_counts():
    def drop(i, **fields):
        base = dict(pid=77, comm="ksoftirqd/0", reason="IP_RPFILTER", location="ip_rcv_finish_core",
                    saddr=f"10.0.5.{i % 6}", daddr="10.0.9.9", iif=7, why="return route via eth1")
        return ev("drop", i * 0.1, **{**base, **fields})

    drops = [drop(0, count=3), drop(1, count=3)] + [drop(i) for i in range(2, 7)]
    [plain] = [f for f in evaluate(drops) if f.rule.startswith("rp-filter")]
    assert plain.rule == "rp-filter-drops" and plain.key == "7" and plain.evidence["drops"] == 11
    assert plain.pids == [77] and len(plain.evidence["flows"]) == 5
    no_ipv4 = [dict(d, why="", iif_has_ipv4=False) for d in drops]
    assert [f.rule for f in evaluate(no_ipv4) if f.rule.startswith("rp-filter")] == ["rp-filter-no-address"]
    has_ipv4 = [dict(d, why="", iif_has_ipv4=True) for d in drops]
    assert [f.rule for f in evaluate(has_ipv4) if f.rule.startswith("rp-filter")] == ["rp-filter-drops"]
    syns = [ev("syn_retry", i * 0.2, pid=55, comm="grpc-client", daddr="10.0.9.9", dport=443, retry=1)
            for i in range(2)]
    [with_syns] = [f for f in evaluate(drops + syns) if f.rule.startswith("rp-filter")]
    assert with_syns.pids == [55]  # the process retrying, not the one the drops were charged to


def test_syn_retransmits_to_dns_server_over_tcp():
    events = [ev("syn_retry", i * 0.3, pid=321, comm="node-cache", saddr="10.0.0.3", sport=5000 + i // 3,
                 daddr="10.96.0.10", dport=53, retry=1 + i % 3) for i in range(12)]
    events.append(ev("connect", 4, pid=321, comm="node-cache", daddr="10.96.0.10", dport=53,
                     latency_ns=7 * S, retries=3, result="timeout"))
    f = [x for x in evaluate(events) if x.rule == "syn-retransmits"]
    assert f and "10.96.0.10:53" in f[0].summary and "DNS server over TCP" in f[0].summary
    assert "force_tcp" in f[0].fix and f[0].pids == [321]
    assert "syn-retransmits" not in rules_of(evaluate(events[:2]))


def test_syn_retransmits_thresholds_severity_and_the_apps_behind_a_cache():
    def syns(daddr, dport, n, pid, comm, **fields):
        return [ev("syn_retry", i * 0.1, pid=pid, comm=comm, daddr=daddr, dport=dport, **fields) for i in range(n)]

    apps = [ev("lookup", 1, pid=401 + i, comm=f"app{i}", name="web.test", latency_ns=2 * S,
               via={"pid": 300, "comm": "unbound", "server": "127.0.0.1"}) for i in range(4)]
    apps.append(ev("lookup", 1, pid=400, comm="other", name="web.test", via={"pid": 999, "server": "127.0.0.2"}))
    connects = [ev("connect", 2, pid=300, comm="unbound", daddr="10.0.3.3", dport=53, result="timeout",
                   latency_ns=3 * S) for _ in range(2)]
    events = (syns("10.0.1.1", 443, 2, 70, "two") + syns("10.0.2.2", 443, 19, 0, "")
              + syns("10.0.3.3", 53, 20, 300, "unbound", retry=1) + syns("10.0.4.4", 443, 3, 71, "three")
              + apps + connects)
    by_dest = {f.key: f for f in evaluate(events) if f.rule == "syn-retransmits"}
    assert sorted(by_dest) == ["10.0.2.2:443", "10.0.3.3:53", "10.0.4.4:443"]  # three retries are enough
    anonymous = by_dest["10.0.2.2:443"]
    assert anonymous.severity == "warning" and anonymous.summary == (
        "processes on this node retransmitted 19 SYNs to 10.0.2.2:443 in 60 s: the destination does not answer "
        "connection attempts")
    assert anonymous.evidence["max_retry"] == 0 and anonymous.evidence["per_second"] == 0.32
    cache = by_dest["10.0.3.3:53"]
    assert cache.severity == "critical" and cache.pids == [300, 401, 402, 403]
    assert "it is the local cache of pid 401 (app0), pid 402 (app1), pid 403 (app2); connects took" in cache.summary
    assert cache.summary.endswith("(2 timeout)") and cache.evidence["connect_results"] == {"timeout": 2}


def test_rp_filter_no_address_vs_plain_rp_filter():
    drops = [ev("drop", i * 0.1, pid=0, comm="", reason="IP_RPFILTER", location="ip_rcv_finish_core",
                saddr="10.0.5.7", daddr="10.0.9.9", iif_name="eni3", why="eni3 has no IPv4 address", count=1)
             for i in range(5)]
    syns = [ev("syn_retry", i * 0.2, pid=55, comm="grpc-client", daddr="10.0.9.9", dport=443, retry=1)
            for i in range(3)]
    findings = evaluate(drops + syns)
    f = next(f for f in findings if f.rule == "rp-filter-no-address")
    assert "eni3 has no IPv4 address" in f.summary and "10.0.5.7" in f.summary and "pid 55" in f.summary
    assert "rp_filter" in f.fix
    plain = [dict(d, why="return route via eth1") for d in drops]
    assert rules_of(evaluate(plain)) & {"rp-filter-drops", "rp-filter-no-address"} == {"rp-filter-drops"}
    other_reason = [dict(d, reason="NETFILTER_DROP") for d in drops]
    assert not rules_of(evaluate(other_reason)) & {"rp-filter-drops", "rp-filter-no-address"}


def race_stream(with_option=False):
    opts = ["single-request-reopen"] if with_option else []
    base = {"nameservers": ["10.96.0.10"], "resolv_options": opts, "search": []}
    events = []
    for i in range(3):
        events.append(ev("dns", i * 6, pid=77, comm="app", qname="db", qtype="A", server="10.96.0.10",
                         sport=33000 + i, same_port_pair=True, answered=True, rcode="NOERROR", latency_ns=1000, **base))
        events.append(ev("dns", i * 6, pid=77, comm="app", qname="db", qtype="AAAA", server="10.96.0.10",
                         sport=33000 + i, same_port_pair=True, answered=False, **base))
        events.append(ev("lookup", i * 6 + 5, pid=77, comm="app", name="db", latency_ns=5_001_000_000, **base))
        events.append(ev("gai", i * 6 + 5, pid=77, comm="app", name="db", latency_ns=5_001_000_000, **base))
    events.append(ev("conntrack", 10, pid=0, comm="", netns="4026531840", insert_failed=3, clash_resolve=2,
                     drop=0, count=100, max=65536))
    return events


def test_aaaa_same_port_race_and_conntrack_insert_failed():
    findings = evaluate(race_stream())
    rules = rules_of(findings)
    assert {"aaaa-same-port-race", "conntrack-insert-failed", "timeout-multiple-latency"} <= rules
    f = next(f for f in findings if f.rule == "aaaa-same-port-race")
    assert "pid 77 (app)" in f.summary and "single-request-reopen" in f.fix and "GRPC_DNS_RESOLVER=native" in f.fix
    c = next(f for f in findings if f.rule == "conntrack-insert-failed")
    assert "3 new entries" in c.summary and "2 other clashes" in c.summary
    assert "conntrack-table-full" not in rules


def test_same_port_pairs_all_answered_do_not_fire():
    events = [e for e in race_stream() if e["kind"] != "conntrack"]
    for e in events:
        if e["kind"] == "dns":
            e.update(answered=True, rcode="NOERROR", latency_ns=1000)
    assert "aaaa-same-port-race" not in rules_of(evaluate(events))
    assert "aaaa-same-port-race" not in rules_of(evaluate(race_stream(with_option=True)))


def test_conntrack_table_full():
    events = [ev("conntrack", 1, pid=0, netns="x", insert_failed=0, drop=40, early_drop=2, count=65000, max=65536)]
    rules = rules_of(evaluate(events))
    assert "conntrack-table-full" in rules and "conntrack-insert-failed" not in rules
    calm = [ev("conntrack", 1, pid=0, netns="x", insert_failed=0, drop=0, clash_resolve=9, count=10, max=65536)]
    assert not rules_of(evaluate(calm))


def test_conntrack_table_full_counts_only_drops_beyond_insert_failures_and_quotes_the_latest_fill():
    def ct(t, **counters):
        return ev("conntrack", t, pid=0, comm="", netns="x", **counters)

    [full] = [f for f in evaluate([ct(1, insert_failed=30, drop=40, early_drop=2, count=65000, max=65536),
                                   ct(2, count=64000, max=65536)]) if f.rule == "conntrack-table-full"]
    assert full.summary == ("the conntrack table is full: 12 packets dropped for lack of room in 60 s "
                            "(64000/65536 entries)")
    assert (full.evidence["drop"], full.evidence["early_drop"], full.evidence["count"], full.evidence["max"]) == \
        (40, 2, 64000, 65536)
    [at_90] = [f for f in evaluate([ct(1, count=900, max=1000)]) if f.rule == "conntrack-table-full"]
    assert at_90.summary.endswith("0 packets dropped for lack of room in 60 s (900/1000 entries)")
    assert not [f for f in evaluate([ct(1, count=899, max=1000)]) if f.rule == "conntrack-table-full"]
    [drops_only] = [f for f in evaluate([ct(1, drop=5, count=10, max=1000)]) if f.rule == "conntrack-table-full"]
    assert drops_only.summary.endswith("5 packets dropped for lack of room in 60 s")
    assert drops_only.evidence["count"] is None and drops_only.evidence["max"] is None


def test_aaaa_race_summary_parts_follow_what_was_seen():
    events = race_stream()
    [race] = [f for f in evaluate(events) if f.rule == "aaaa-same-port-race"]
    assert race.summary == (
        "pid 77 (app) sends A and AAAA in parallel from one socket and 3 of those queries were never answered "
        "while conntrack refused 3 inserts: the conntrack race drops one of the pair and the resolver waits its "
        "5 s timeout (3 lookups took ≥ 5 s)")
    assert race.evidence["bypasses_libc"] is False and race.evidence["clash_resolve"] == 2
    assert sorted(race.evidence["ports"]) == [33000, 33001, 33002]
    # gai traced, but no getaddrinfo call from this process: it resolves without libc
    no_gai = [e for e in events if e["kind"] != "gai"] + [ev("gai", 1, pid=5, comm="curl", name="x", latency_ns=1)]
    [bypass] = [f for f in evaluate(no_gai) if f.rule == "aaaa-same-port-race"]
    assert bypass.summary.endswith("; this process resolves without libc, so resolv.conf options may not help")
    assert bypass.evidence["bypasses_libc"] is True
    # one lost query and no insert failure is not enough; with insert failures it is
    one = [e for e in events if e["kind"] != "conntrack" and not (e["kind"] == "dns" and e["sport"] != 33000)]
    assert not [f for f in evaluate(one) if f.rule == "aaaa-same-port-race"]
    one_with_failures = one + [e for e in events if e["kind"] == "conntrack"]
    assert [f.evidence["lost_same_port_queries"] for f in evaluate(one_with_failures)
            if f.rule == "aaaa-same-port-race"] == [1]
    for option in ("single-request", "use-vc", "single-request-reopen"):
        configured = [dict(e, resolv_options=[option]) if e.get("pid") == 77 else e for e in events]
        assert not [f for f in evaluate(configured) if f.rule == "aaaa-same-port-race"], option


def test_ndots_nxdomain_storm():
    base = {"search": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            "resolv_options": ["ndots:5"], "nameservers": ["10.96.0.10"]}
    events = []
    for i in range(5):
        for suffix in base["search"]:
            events.append(ev("dns", i, pid=8, comm="web", qname=f"api.example.com.{suffix}", qtype="A",
                             server="10.96.0.10", answered=True, rcode="NXDOMAIN", latency_ns=1000, **base))
        events.append(ev("dns", i, pid=8, comm="web", qname="api.example.com", qtype="A", server="10.96.0.10",
                         answered=True, rcode="NOERROR", latency_ns=1000, **base))
    f = [x for x in evaluate(events) if x.rule == "ndots-nxdomain-storm"]
    assert f and "ndots:5" in f[0].summary and "trailing dot" in f[0].fix
    # NXDOMAIN for unrelated names (typos, not search expansion) is not an ndots storm
    unrelated = [ev("dns", i, pid=8, comm="web", qname=f"typo{i}.example.org", qtype="A", server="10.96.0.10",
                    answered=True, rcode="NXDOMAIN", latency_ns=1000, search=[], resolv_options=[])
                 for i in range(20)]
    assert "ndots-nxdomain-storm" not in rules_of(evaluate(unrelated))


def test_ndots_nxdomain_storm_thresholds_and_which_resolv_conf_it_reads():
    search = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    resolv = {"search": search, "resolv_options": ["ndots:5"], "nameservers": ["10.96.0.10"]}

    def q(pid, qname, rcode="NXDOMAIN", server="10.96.0.10", **fields):
        return ev("dns", 1, pid=pid, comm=f"p{pid}", qname=qname, qtype="A", server=server, answered=True,
                  rcode=rcode, latency_ns=1000, **{**resolv, **fields})

    def expansions(pid, n, base="api.test"):
        return [q(pid, f"{base}.{search[i % 3]}") for i in range(n)]

    def typos(pid, n):
        return [q(pid, f"typo{i}.example.org") for i in range(n)]

    def answers(pid, n, name="api.test"):
        return [q(pid, name, rcode="NOERROR") for _ in range(n)]

    skipped = (
        [q(100, None) for _ in range(10)]  # NXDOMAIN without a name to judge
        + expansions(101, 9)  # one short of ten
        + expansions(107, 10) + answers(107, 30)  # most of its queries were answered
        + expansions(108, 10) + typos(108, 21)  # most of its NXDOMAINs are not expansions
    )
    by_base = [q(103, f"db.internal.corp{i}.example", search=[], resolv_options=[]) for i in range(10)] \
        + [q(103, "db.internal", rcode="NOERROR", search=[], resolv_options=[]) for _ in range(10)]
    # resolv.conf edited after the first query: the query's own search list is the one expanded
    edited = [q(106, f"n{i}.a.svc", search=["a.svc"] if i == 0 else []) for i in range(10)]
    half = expansions(105, 10) + typos(105, 10)
    varied = [q(102, name, server=f"10.0.0.{i % 9}") for i, name in enumerate(
        ["api.test.default.svc.cluster.local"] * 4 + ["api.test.svc.cluster.local"] * 3
        + ["api.test.cluster.local"] * 2 + ["web.test.cluster.local", "typo.example.org", "typo2.example.org"])]
    varied += answers(102, 12)
    storms = {f.pids[0]: f for f in evaluate(skipped + by_base + edited + half + varied)
              if f.rule == "ndots-nxdomain-storm"}
    assert sorted(storms) == [102, 103, 105, 106]
    assert storms[103].summary.startswith("10 of 20 queries by pid 103 (p103) in 60 s got NXDOMAIN from "
                                          "search-list expansion (e.g. db.internal.corp0.example)")
    assert storms[106].evidence["search"] == ["a.svc"]
    varied_storm = storms[102]
    assert "(e.g. api.test.default.svc.cluster.local)" in varied_storm.summary
    assert varied_storm.evidence["examples"] == ["api.test.default.svc.cluster.local", "api.test.svc.cluster.local",
                                                 "api.test.cluster.local"]
    assert len(varied_storm.evidence["servers"]) == 8 and varied_storm.evidence["ndots"] == "5"


def test_cache_miss_storm_respects_ttl():
    events = [ev("dns", i * 0.5, pid=9, comm="worker", qname="db.internal", qtype="A", server="127.0.0.53",
                 answered=True, rcode="NOERROR", latency_ns=1000, proto="udp") for i in range(110)]
    f = [x for x in evaluate(events) if x.rule == "cache-miss-storm"]
    assert f and "db.internal" in f[0].summary and "pid 9 (worker)" in f[0].summary
    # TTL 1 s: 110 queries in 55 s is what the TTL allows
    with_ttl = [dict(e, ttl=1) for e in events]
    assert "cache-miss-storm" not in rules_of(evaluate(with_ttl))
    assert "cache-miss-storm" not in rules_of(evaluate(events[:20]))


def test_resolver_bypasses_libc_only_when_gai_is_traced():
    dns = [ev("dns", i, pid=31, comm="goapp", qname="svc", qtype="A", server="10.0.0.2", sport=50000 + i,
              answered=True, rcode="NOERROR", latency_ns=1000) for i in range(4)]
    other_gai = [ev("gai", 1, pid=32, comm="curl", name="x", latency_ns=1000, error=None)]
    assert "resolver-bypasses-libc" in rules_of(evaluate(dns + other_gai))
    assert "resolver-bypasses-libc" not in rules_of(evaluate(dns))  # gai not traced: we cannot tell
    own_gai = [ev("gai", 1, pid=31, comm="goapp", name="svc", latency_ns=1000, error=None)]
    assert "resolver-bypasses-libc" not in rules_of(evaluate(dns + own_gai))
    server = [dict(e, comm="dnsmasq") for e in dns]
    assert "resolver-bypasses-libc" not in rules_of(evaluate(server + other_gai))


def test_resolver_bypasses_libc_names_every_such_process_from_three_queries_on():
    def queries(pid, comm, n, sport=50000):
        return [ev("dns", i, pid=pid, comm=comm, qname=f"q{i % 7}.test", qtype="A", server=f"10.0.0.{i % 10}",
                   sport=sport + i, answered=True, rcode="NOERROR", latency_ns=1000) for i in range(n)]

    other_gai = [ev("gai", 1, pid=32, comm="curl", name="x", latency_ns=1000, error=None)]
    server = [dict(q, sport=53) for q in queries(20, "authoritative", 4)]  # answers from port 53: a server
    found = evaluate(queries(33, "few", 2) + server + queries(30, "goapp", 3) + queries(31, "javaapp", 12)
                     + other_gai)
    bypass = {f.pids[0]: f for f in found if f.rule == "resolver-bypasses-libc"}
    assert sorted(bypass) == [30, 31]  # three queries are enough; two are not; the server is left out
    assert bypass[30].summary.startswith("pid 30 (goapp) sent 3 DNS queries without calling getaddrinfo")
    evidence = bypass[31].evidence
    assert evidence["queries"] == 12 and len(evidence["servers"]) == 8 and evidence["servers"][0] == "10.0.0.0"
    assert evidence["qnames"][:2] == ["q0.test", "q1.test"] and len(evidence["qnames"]) == 5


def test_healthy_stream_has_no_findings():
    events = []
    for i in range(50):
        events.append(ev("dns", i, qname=f"n{i % 7}", qtype="A", server="10.0.0.2", answered=True,
                         rcode="NOERROR", latency_ns=2_000_000, **RESOLV))
        events.append(ev("gai", i, name=f"n{i % 7}", latency_ns=3_000_000, error=None))
    assert evaluate(events) == []


def test_engine_emits_each_finding_once_per_minute_and_bounds_events():
    engine = FindingsEngine(max_events_per_kind=100)
    got = []
    engine.on_finding = got.append
    engine.handle(dead_nameserver_stream())
    now = T0 + 31 * S
    engine.evaluate(now)
    engine.evaluate(now + S)
    assert [e["rule"] for e in got].count("dead-nameserver") == 1
    assert got[0]["kind"] == "finding" and got[0]["summary"] and got[0]["fix"]
    engine.handle([ev("dns", 200, qname="a", server="1.1.1.1", answered=True, rcode="NOERROR") for _ in range(150)])
    # 12 dns events were still in the window: 12 + 150 - 100 evicted over the bound
    assert engine.stats()["evicted_over_bound"] == 62


# Ids users have alerts, dashboards and queries on: never renamed or dropped (new rules come after).
SHIPPED_RULE_IDS = ("dead-nameserver", "slow-nameserver", "timeout-multiple-latency", "truncated-not-cached",
                    "tcp-fallback", "cache-miss-storm", "syn-retransmits", "rp-filter-no-address", "rp-filter-drops",
                    "conntrack-insert-failed", "conntrack-table-full", "aaaa-same-port-race", "ndots-nxdomain-storm",
                    "resolver-bypasses-libc", "local-cache-upstream")


def test_rule_ids_are_stable():
    assert len(set(RULE_IDS)) == len(RULE_IDS)
    assert set(SHIPPED_RULE_IDS) <= set(RULE_IDS)


def test_dns_queries_refused_by_conntrack_vs_firewall_drop():
    refused = [ev("drop", i * 0.3, pid=19, comm="grpc-app", reason="NETFILTER_DROP", location="nf_hook_slow",
                  protocol="udp", saddr="10.97.0.2", daddr="10.97.0.1", sport=40000 + i, dport=53, count=1)
               for i in range(4)]
    f = [x for x in evaluate(refused) if x.rule == "conntrack-insert-failed"]
    assert f and "pid 19 (grpc-app)" in f[0].summary and "10.97.0.1:53" in f[0].summary
    # a firewall rule dropping DNS (nft/iptables chain) is not a conntrack insert failure
    firewall = [dict(e, location="nft_do_chain") for e in refused]
    assert "conntrack-insert-failed" not in rules_of(evaluate(firewall))


def test_both_queries_of_pair_lost_is_a_nat_collision_not_the_race():
    """Seed 004 as this kernel shows it: SNAT port collision loses both A and AAAA; single-request-reopen won't help."""
    events = race_stream()
    for e in events:
        if e["kind"] == "dns":
            e.update(answered=False, rcode=None, latency_ns=None)
    findings = evaluate(events)
    rules = rules_of(findings)
    assert "aaaa-same-port-race" not in rules
    c = next(f for f in findings if f.rule == "conntrack-insert-failed")
    assert "pid 77 (app)" in c.summary and "10.96.0.10" in c.summary and "not the A/AAAA race" in c.summary
    assert "--random-fully" in c.fix and "will not help" in c.fix
    assert c.evidence["both_of_pair_lost"] == 6 and c.pids == [77]


# --- fair evidence buffers and the agent's own losses ------------------------------------


def ndots_expansions(pid=77, comm="web-frontend", n=20, t=50):
    search = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    base = {"search": search, "resolv_options": ["ndots:5"], "nameservers": ["10.96.0.10"]}
    events = []
    for i in range(n):
        events.append(ev("dns", t + i * 0.1, pid=pid, comm=comm, qname=f"api.example.test.{search[i % 3]}",
                         qtype="A", server="10.96.0.10", answered=True, rcode="NXDOMAIN", latency_ns=1000, **base))
    events.append(ev("dns", t + 3, pid=pid, comm=comm, qname="api.example.test", qtype="A", server="10.96.0.10",
                     answered=True, rcode="NOERROR", latency_ns=1000, **base))
    return events


def flood(n, pid=666, t0=0.0, t1=59.0):
    return [ev("dns", t0 + (t1 - t0) * i / n, pid=pid, comm="flooder", qname=f"f{i}.example", qtype="A",
               server="127.0.0.1", answered=True, rcode="NOERROR", latency_ns=50_000, sport=30000 + i % 20000)
            for i in range(n)]


def test_flood_from_one_process_does_not_evict_another_processes_ndots_evidence():
    engine = FindingsEngine()
    flood_events = flood(100_000)
    engine.handle(flood_events[:50_000])
    engine.handle(ndots_expansions())
    engine.handle(flood_events[50_000:])  # the flood goes on after the incident
    found = [f for f in engine.evaluate(T0 + 60 * S) if f.rule == "ndots-nxdomain-storm"]
    assert found and found[0].pids == [77] and "web-frontend" in found[0].summary
    stats = engine.stats()
    # bounded: the flooder paid for the bound, with its own events only
    assert engine.events["dns"].total <= 20_000 and stats["evicted_over_bound"] == 100_021 - 20_000
    assert len(engine.events["dns"].by_owner[77]) == 21


def test_fair_buffer_bounds_memory_whatever_the_number_of_processes():
    engine = FindingsEngine(max_events_per_kind=1000)
    engine.handle([ev("dns", i / 1000, pid=10_000 + i, comm="p", qname="x", server="10.0.0.2", answered=True,
                      rcode="NOERROR") for i in range(50_000)])
    buffer = engine.events["dns"]
    assert buffer.total == 1000 and len(buffer.by_owner) <= 1000 and buffer.evicted == 49_000
    # max-min fair: ten flooders share the bound; a quieter process keeps all of its 50 events
    engine = FindingsEngine(max_events_per_kind=1000)
    buffer = engine.events["dns"]
    engine.handle([ev("dns", 56 + i / 100_000, pid=100 + i % 10, comm="flood", qname="x", server="10.0.0.2",
                      answered=True, rcode="NOERROR") for i in range(100_000)])
    engine.handle([ev("dns", 58, pid=5, comm="q", qname="y", server="10.0.0.2", answered=True, rcode="NOERROR")
                   for _ in range(50)])
    assert len(buffer.by_owner[5]) == 50 and buffer.total == 1000
    assert all(90 <= len(buffer.by_owner[100 + i]) <= 96 for i in range(10))


def test_buffered_events_keep_only_fields_rules_read():
    engine = FindingsEngine()
    engine.handle([ev("dns", 1, qname="a", server="10.0.0.2", answered=True, rcode="NOERROR",
                      answers=["1.2.3.4"] * 16, pair_of={"ts": 1}, ns_index=0)])
    kept = engine.events["dns"].by_owner[4711][0]
    assert "answers" not in kept and "pair_of" not in kept
    assert kept["qname"] == "a" and kept["server"] == "10.0.0.2" and kept["pid"] == 4711


def test_flood_and_the_must_not_fire_cases_still_hold():
    engine = FindingsEngine()
    engine.handle(flood(50_000))
    unrelated = [ev("dns", 30 + i, pid=8, comm="web", qname=f"typo{i}.example.org", qtype="A",
                    server="10.96.0.10", answered=True, rcode="NXDOMAIN", latency_ns=1000, search=[],
                    resolv_options=[]) for i in range(20)]
    engine.handle(unrelated)
    rules = rules_of(engine.evaluate(T0 + 60 * S))
    assert "ndots-nxdomain-storm" not in rules and "dead-nameserver" not in rules


def agent_loss(t, dns_lost, source="dns"):
    return ev("agent", t, pid=1, comm="dnstrace", source=source, losses={"ringbuf_lost": dns_lost},
              lost=dns_lost, dns_lost=dns_lost)


def test_dead_nameserver_with_and_without_the_agents_own_losses():
    stream = dead_nameserver_stream()  # 6 queries to 10.100.0.9 unanswered
    plain = [f for f in evaluate(stream) if f.rule == "dead-nameserver"]
    assert plain and plain[0].severity == "critical" and "unreliable" not in plain[0].summary
    # the agent lost more DNS records than there are unanswered queries: its own loss may explain it all
    flood_loss = [f for f in evaluate(stream + [agent_loss(20, 500)]) if f.rule == "dead-nameserver"]
    assert flood_loss and flood_loss[0].severity == "info"
    assert flood_loss[0].summary.startswith("unreliable: the agent itself lost 500 DNS records in the last 60 s, "
                                            "enough to explain the 6 missing answers: lookups by pid 4711")
    # fewer lost than unanswered: the finding stands, marked unreliable, one severity lower
    shaky = [f for f in evaluate(stream + [agent_loss(20, 2)]) if f.rule == "dead-nameserver"]
    assert shaky and shaky[0].severity == "warning"
    assert shaky[0].summary.startswith("unreliable: the agent itself lost 2 DNS records")
    assert shaky[0].evidence["agent_lost_dns_records"] == 2
    # losses of other records (SYN retransmit events) say nothing about DNS answers
    other = dict(agent_loss(20, 0, source="tcp"), losses={"ringbuf_full": 900}, lost=900)
    assert [f.severity for f in evaluate(stream + [other]) if f.rule == "dead-nameserver"] == ["critical"]
    # losses older than the window do not count
    old = evaluate([agent_loss(-120, 500)] + stream, now_ns=T0 + 40 * S)
    assert [f.severity for f in old if f.rule == "dead-nameserver"] == ["critical"]


def test_engine_takes_agent_events_from_the_stream():
    engine = FindingsEngine()
    engine.handle(dead_nameserver_stream())
    engine.handle([agent_loss(30, 10_000)])
    assert [f.severity for f in engine.evaluate(T0 + 40 * S) if f.rule == "dead-nameserver"] == ["info"]


def test_wire_lookups_at_timeout_multiples_are_unreliable_under_loss():
    lookups = [ev("lookup", i * 5, name="svc", latency_ns=5_000_000_000 + 1000 * i, error=None, source="wire",
                  **RESOLV) for i in range(4)]
    assert [f.severity for f in evaluate(lookups) if f.rule == "timeout-multiple-latency"] == ["warning"]
    for lost in (1, 100):  # fewer or more than the 4 lookups: "warning" goes to "info" either way
        shaky = [f for f in evaluate(lookups + [agent_loss(10, lost)]) if f.rule == "timeout-multiple-latency"]
        assert shaky and shaky[0].severity == "info" and shaky[0].summary.startswith("unreliable")
    gai_measured = [dict(e, source="gai") for e in lookups]
    assert [f.severity for f in evaluate(gai_measured + [agent_loss(10, 100)])
            if f.rule == "timeout-multiple-latency"] == ["warning"]


def test_finding_events_use_only_the_vocabulary():
    from dnstrace.events import undeclared_fields

    refused = [ev("drop", i * 0.3, pid=19, comm="grpc-app", reason="NETFILTER_DROP", location="nf_hook_slow",
                  protocol="udp", saddr="10.97.0.2", daddr="10.97.0.1", sport=40000 + i, dport=53, count=1)
               for i in range(4)]
    findings = evaluate(refused)
    assert findings
    for finding in findings:
        assert undeclared_fields(finding.event(int(T0 + 1), "n1")) == set()
