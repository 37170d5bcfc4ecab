"""The conntrack rules (findings/rules/conntrack.py) to the word: summaries, evidence, severities,
thresholds and what each rule leaves out."""

from __future__ import annotations

from test_findings import S, agent_loss, ev, evaluate, race_stream

CT_TOTALS = {"insert_failed": 3, "drop": 0, "early_drop": 0, "invalid": 0, "clash_resolve": 2, "search_restart": 0}


def of_rule(events, rule, **kwargs):
    return [f for f in evaluate(events, **kwargs) if f.rule == rule]


def ct(t, netns="x", **counters):
    return ev("conntrack", t, pid=0, comm="", netns=netns, **counters)


def both_lost_stream():
    events = race_stream()
    for e in events:
        if e["kind"] == "dns":
            e.update(answered=False, rcode=None, latency_ns=None)
    return events


def test_insert_failed_with_one_of_each_pair_lost_names_the_losses():
    [f] = of_rule(race_stream(), "conntrack-insert-failed")
    assert f.severity == "critical" and f.key == "insert_failed"
    assert f.summary == ("conntrack refused 3 new entries (insert_failed) in 60 s in netns 4026531840: the first "
                         "packet of those flows was dropped (2 other clashes were resolved without loss); 3 DNS "
                         "queries sent as A+AAAA on one port went unanswered (by app)")
    assert f.evidence == {**CT_TOTALS, "netns": ["4026531840"], "same_port_losses": 3}
    assert (f.pids, f.comms) == ([77], ["app"])
    assert "single-request-reopen" in f.fix and "--random-fully" in f.fix


def test_insert_failed_without_dns_losses_is_a_warning_naming_no_process():
    [f] = of_rule([ct(1, netns="", insert_failed=4, clash_resolve=1)], "conntrack-insert-failed")
    assert f.severity == "warning" and f.key == "insert_failed"
    # the event carries an empty netns string: it is listed as given
    assert f.evidence["netns"] == [""] and f.evidence["same_port_losses"] == 0
    quiet = [ct(1, netns="7", clash_resolve=5, insert_failed=0)]
    assert not of_rule(quiet, "conntrack-insert-failed")


def test_insert_failed_lists_only_namespaces_that_failed_sorted():
    events = [ct(1, netns="9", insert_failed=1), ct(2, netns="3", drop=1), ct(3, netns="5", early_drop=1),
              ct(4, netns="1", clash_resolve=4), ct(5, netns="9", insert_failed=1)]
    [f] = of_rule(events, "conntrack-insert-failed")
    assert f.evidence["netns"] == ["3", "5", "9"]
    assert f.summary == ("conntrack refused 2 new entries (insert_failed) in 60 s in netns 3, 5, 9: the first "
                         "packet of those flows was dropped (4 other clashes were resolved without loss)")
    assert f.evidence["insert_failed"] == 2 and f.evidence["clash_resolve"] == 4
    assert (f.pids, f.comms, f.containers) == ([], [], [])


def test_insert_failed_from_an_event_without_namespace_names_it_none():
    events = [ev("conntrack", 1, pid=0, comm="", insert_failed=2)]
    [f] = of_rule(events, "conntrack-insert-failed")
    assert f.summary == ("conntrack refused 2 new entries (insert_failed) in 60 s in netns None: the first packet "
                         "of those flows was dropped (0 other clashes were resolved without loss)")
    assert f.evidence["netns"] == ["None"]


def test_nat_collision_summary_evidence_and_key():
    [f] = of_rule(both_lost_stream(), "conntrack-insert-failed")
    assert f.severity == "critical" and f.key == "insert_failed/77"
    assert f.summary == (
        "DNS queries by pid 77 (app) to 10.96.0.10 vanish: both the A and the AAAA query of 3 lookups were lost "
        "while conntrack refused 3 new entries (insert_failed in netns 4026531840) in 60 s, so the resolver waits "
        "its 5 s timeout (3 lookups took ≥ 5 s). Both halves of each pair are lost, so this is not the A/AAAA "
        "race: new flows collide on their NAT mapping (an SNAT rule with too few source ports)")
    assert f.evidence == {**CT_TOTALS, "netns": ["4026531840"], "both_of_pair_lost": 6, "pairs": 3,
                          "servers": {"10.96.0.10": 6}, "resolv_options": ["ndots:1", "timeout:5", "attempts:2"]}
    assert (f.pids, f.comms) == ([77], ["app"])
    assert "single-request-reopen will not help" in f.fix
    assert not of_rule(both_lost_stream(), "aaaa-same-port-race")


def test_nat_collision_counts_lookups_from_four_fifths_of_the_timeout():
    def with_latency(latency_ns):
        events = both_lost_stream()
        for e in events:
            if e["kind"] == "lookup":
                e["latency_ns"] = latency_ns
        [f] = of_rule(events, "conntrack-insert-failed")
        return f.summary

    assert "(3 lookups took ≥ 5 s)" in with_latency(4 * S)
    assert "lookups took" not in with_latency(4 * S - 1)
    assert with_latency(4 * S - 1).count("timeout. Both halves") == 1


def test_nat_collision_without_namespace_and_with_agent_losses():
    events = [e for e in both_lost_stream() if e["kind"] != "conntrack"]
    events.append(ev("conntrack", 10, pid=0, comm="", insert_failed=3, clash_resolve=0))
    [f] = of_rule(events, "conntrack-insert-failed")
    # the conntrack event has no netns field: listed as "None", still a namespace
    assert "(insert_failed in netns None) in 60 s" in f.summary
    [lossy] = of_rule(events + [agent_loss(20, 2)], "conntrack-insert-failed")
    assert lossy.severity == "warning" and lossy.evidence["agent_lost_dns_records"] == 2
    assert lossy.summary.startswith("unreliable: the agent itself lost 2 DNS records in the last 60 s, so some")
    [flood] = of_rule(events + [agent_loss(20, 6)], "conntrack-insert-failed")
    assert flood.severity == "info"
    assert flood.summary.startswith("unreliable: the agent itself lost 6 DNS records in the last 60 s, enough to "
                                    "explain the 6 missing answers")


def test_one_lost_and_both_lost_pairs_in_one_window_give_both_findings():
    events = race_stream()
    both = [ev("dns", 30, pid=88, comm="other", qname="cache", qtype=qtype, server="10.96.0.11", sport=34000,
               same_port_pair=True, answered=False, nameservers=["10.96.0.11"], resolv_options=[], search=[])
            for qtype in ("A", "AAAA")]
    findings = of_rule(events + both, "conntrack-insert-failed")
    assert sorted(f.key for f in findings) == ["insert_failed", "insert_failed/88"]
    race = next(f for f in findings if f.key == "insert_failed")
    assert race.severity == "critical" and race.evidence["same_port_losses"] == 3 and race.pids == [77]
    nat = next(f for f in findings if f.key == "insert_failed/88")
    assert nat.evidence["both_of_pair_lost"] == 2 and nat.evidence["pairs"] == 1
    # only both-lost pairs: no separate "insert_failed" finding
    assert [f.key for f in of_rule(both_lost_stream(), "conntrack-insert-failed")] == ["insert_failed/77"]


def test_same_port_groups_match_names_case_insensitively_and_only_a_and_aaaa():
    events = race_stream()
    for e in events:
        if e["kind"] == "dns" and e["qtype"] == "AAAA":
            e["qname"] = "DB"
    [race] = of_rule(events, "aaaa-same-port-race")
    assert race.evidence["lost_same_port_queries"] == 3
    # an MX query flagged on the same port is not half of an A/AAAA pair
    mx = [dict(e, qtype="MX") if e["kind"] == "dns" and e["qtype"] == "AAAA" else e for e in race_stream()]
    assert not of_rule(mx, "aaaa-same-port-race")
    assert of_rule(mx, "conntrack-insert-failed")[0].evidence["same_port_losses"] == 0
    # queries of another process that were not flagged do not join the flagged process's groups
    other = [dict(e, pid=78, same_port_pair=False) for e in race_stream() if e["kind"] == "dns"]
    [race] = of_rule(race_stream() + other, "aaaa-same-port-race")
    assert race.evidence["lost_same_port_queries"] == 3 and race.pids == [77]


def test_unflagged_same_name_queries_of_the_flagged_port_count_in_the_pair():
    # the answered A of each pair is not flagged: it still tells that only one of the pair was lost
    events = [dict(e, same_port_pair=False) if e["kind"] == "dns" and e["qtype"] == "A" else e
              for e in race_stream()]
    [race] = of_rule(events, "aaaa-same-port-race")
    assert race.evidence["qtypes"] == {"AAAA": 3}
    assert not [f for f in of_rule(events, "conntrack-insert-failed") if f.key.startswith("insert_failed/")]


def test_dns_queries_refused_by_netfilter_to_the_word():
    def drop(i, **fields):
        base = dict(pid=19, comm="grpc-app", reason="NETFILTER_DROP", location="nf_hook_slow", protocol="udp",
                    saddr="10.97.0.2", daddr="10.97.0.1", sport=40000 + i % 2, dport=53, count=2)
        base.update(fields)
        return ev("drop", i * 0.3, **base)

    refused = [drop(i) for i in range(3)] + [drop(3, daddr="10.97.0.5", count=None)]
    [f] = of_rule(refused, "conntrack-insert-failed")
    assert f.severity == "critical" and f.key == "refused/19"
    assert f.summary == ("7 DNS queries by pid 19 (grpc-app) to 10.97.0.1:53 were dropped by netfilter as they "
                         "were sent (conntrack/NAT could not insert their entry) in 60 s: lookups fail or wait for "
                         "the resolver timeout")
    assert f.evidence == {"dropped_queries": 7, "destinations": {"10.97.0.1:53": 3, "10.97.0.5:53": 1},
                          "location": "nf_hook_slow", "source_ports": 2}
    assert (f.pids, f.comms) == ([19], ["grpc-app"])
    assert "GRPC_DNS_RESOLVER=native" in f.fix
    # not DNS, not from a process, or another reason: not counted
    others = [drop(10, dport=443), drop(11, pid=0), drop(12, reason="NO_SOCKET"), drop(13, location="nft_do_chain")]
    assert not of_rule(others, "conntrack-insert-failed")
    [f] = of_rule(refused + others, "conntrack-insert-failed")
    assert f.evidence["dropped_queries"] == 7


def test_refused_queries_with_insert_failures_also_give_the_table_finding():
    refused = [ev("drop", 1, pid=19, comm="grpc-app", reason="NETFILTER_DROP", location="nf_hook_slow",
                  daddr="10.97.0.1", sport=40000, dport=53)]
    findings = of_rule(refused + [ct(2, insert_failed=1)], "conntrack-insert-failed")
    assert sorted(f.key for f in findings) == ["insert_failed", "refused/19"]
    table = next(f for f in findings if f.key == "insert_failed")
    # no same-port losses: the refused queries' processes are the ones affected
    assert table.severity == "warning" and table.pids == [19] and table.comms == ["grpc-app"]
    assert next(f for f in findings if f.key == "refused/19").evidence["dropped_queries"] == 1


def test_table_full_needs_drops_beyond_insert_failures_or_a_known_fill():
    assert not of_rule([ct(1, insert_failed=5, drop=2)], "conntrack-table-full")  # never negative
    assert not of_rule([ct(1, insert_failed=5, drop=5)], "conntrack-table-full")
    [one] = of_rule([ct(1, insert_failed=5, drop=6)], "conntrack-table-full")
    assert one.summary == "the conntrack table is full: 1 packets dropped for lack of room in 60 s"
    [early] = of_rule([ct(1, early_drop=1)], "conntrack-table-full")
    assert early.severity == "critical" and early.key == "table-full"
    assert early.evidence == {"drop": 0, "early_drop": 1, "count": None, "max": None, "netns": ["x"]}
    # a fill is known only with both a count and a limit
    assert not of_rule([ct(1, count=0, max=0)], "conntrack-table-full")
    assert not of_rule([ct(1, count=5)], "conntrack-table-full")
    assert not of_rule([ct(1, max=5)], "conntrack-table-full")
    [small] = of_rule([ct(1, count=1, max=1)], "conntrack-table-full")
    assert small.summary.endswith("(1/1 entries)")


def test_aaaa_race_two_losses_without_insert_failures_and_its_fix():
    events = [e for e in race_stream() if e["kind"] != "conntrack"
              and not (e["kind"] == "dns" and e["sport"] == 33002)]
    [race] = of_rule(events, "aaaa-same-port-race")
    assert race.severity == "critical" and race.pids == [77]
    assert race.summary == ("pid 77 (app) sends A and AAAA in parallel from one socket and 2 of those queries were "
                            "never answered: the conntrack race drops one of the pair and the resolver waits its 5 s "
                            "timeout (3 lookups took ≥ 5 s)")
    # the two ports are lost once each: their order is the order the pairs were grouped in
    assert sorted(race.evidence.pop("ports")) == [33000, 33001]
    assert race.evidence == {"lost_same_port_queries": 2, "qtypes": {"AAAA": 2},
                             "insert_failed": 0, "clash_resolve": 0, "servers": ["10.96.0.10"],
                             "resolv_options": ["ndots:1", "timeout:5", "attempts:2"], "bypasses_libc": False}
    assert "pod dnsConfig.options" in race.fix


def test_aaaa_race_slow_lookups_from_four_fifths_of_the_timeout_and_agent_losses():
    def with_latency(latency_ns):
        return [dict(e, latency_ns=latency_ns) if e["kind"] == "lookup" else e for e in race_stream()]

    [race] = of_rule(with_latency(4 * S), "aaaa-same-port-race")
    assert race.summary.endswith("waits its 5 s timeout (3 lookups took ≥ 5 s)")
    [race] = of_rule(with_latency(4 * S - 1), "aaaa-same-port-race")
    assert race.summary.endswith("waits its 5 s timeout")
    [lossy] = of_rule(race_stream() + [agent_loss(20, 1)], "aaaa-same-port-race")
    assert lossy.severity == "warning" and lossy.evidence["agent_lost_dns_records"] == 1
    [flood] = of_rule(race_stream() + [agent_loss(20, 3)], "aaaa-same-port-race")
    assert flood.severity == "info" and "explain the 3 missing answers" in flood.summary


def test_aaaa_race_without_gai_tracing_does_not_claim_a_libc_bypass():
    events = [e for e in race_stream() if e["kind"] != "gai"]
    [race] = of_rule(events, "aaaa-same-port-race")
    assert race.evidence["bypasses_libc"] is False and "without libc" not in race.summary


def test_an_answered_query_of_another_type_on_the_pairs_port_does_not_make_it_the_race():
    mx = ev("dns", 1, pid=77, comm="app", qname="db", qtype="MX", server="10.96.0.10", sport=33000,
            same_port_pair=False, answered=True, rcode="NOERROR", latency_ns=1000)
    events = both_lost_stream() + [mx]
    assert not of_rule(events, "aaaa-same-port-race")
    [nat] = of_rule(events, "conntrack-insert-failed")
    assert nat.evidence["both_of_pair_lost"] == 6


def test_pairs_without_a_loss_do_not_hide_the_pairs_with_one():
    events = race_stream()
    for i in range(20):  # twenty more pairs, all answered, on their own ports
        for qtype in ("A", "AAAA"):
            events.append(ev("dns", 20 + i, pid=77, comm="app", qname="db", qtype=qtype, server="10.96.0.10",
                             sport=35000 + i, same_port_pair=True, answered=True, rcode="NOERROR", latency_ns=1000))
    [race] = of_rule(events, "aaaa-same-port-race")
    assert race.evidence["lost_same_port_queries"] == 3


def test_nat_collision_counts_pairs_by_port_and_name():
    both = [ev("dns", 30, pid=88, comm="other", qname=qname, qtype=qtype, server="10.96.0.11", sport=34000,
               same_port_pair=True, answered=False)
            for qname in ("cache", "store") for qtype in ("A", "AAAA")]
    [nat] = of_rule(both + [ct(1, insert_failed=1)], "conntrack-insert-failed")
    assert nat.evidence["pairs"] == 2 and nat.evidence["both_of_pair_lost"] == 4


def test_evidence_lists_keep_the_five_most_common():
    both = [ev("dns", 30, pid=88, comm="other", qname="db", qtype=qtype, server=f"10.96.0.{i}", sport=34000 + i,
               same_port_pair=True, answered=False) for i in range(6) for qtype in ("A", "AAAA")]
    [nat] = of_rule(both + [ct(1, insert_failed=1)], "conntrack-insert-failed")
    assert len(nat.evidence["servers"]) == 5
    refused = [ev("drop", 1, pid=19, comm="grpc-app", reason="NETFILTER_DROP", location="nf_hook_slow",
                  daddr=f"10.97.0.{i}", sport=40000, dport=53) for i in range(6)]
    [f] = of_rule(refused, "conntrack-insert-failed")
    assert len(f.evidence["destinations"]) == 5 and f.evidence["dropped_queries"] == 6
    one_lost = []
    for i in range(6):
        for qtype, answered in (("A", True), ("AAAA", False)):
            one_lost.append(ev("dns", i, pid=77, comm="app", qname="db", qtype=qtype, server="10.96.0.10",
                               sport=33000 + i, same_port_pair=True, answered=answered, rcode="NOERROR"
                               if answered else None, latency_ns=1000 if answered else None))
    [race] = of_rule(one_lost, "aaaa-same-port-race")
    assert race.evidence["lost_same_port_queries"] == 6 and len(race.evidence["ports"]) == 5


def test_insert_failed_summary_names_at_most_three_processes():
    events = [ct(1, insert_failed=2)]
    for n, comm in enumerate(("app-a", "app-b", "app-c", "app-d")):
        for qtype, answered in (("A", True), ("AAAA", False)):
            events.append(ev("dns", n, pid=70 + n, comm=comm, qname="db", qtype=qtype, server="10.96.0.10",
                             sport=33000, same_port_pair=True, answered=answered, rcode="NOERROR" if answered else None,
                             latency_ns=1000 if answered else None))
    [f] = [f for f in of_rule(events, "conntrack-insert-failed") if f.key == "insert_failed"]
    head, named = f.summary.rsplit(" (by ", 1)
    assert head.endswith("; 4 DNS queries sent as A+AAAA on one port went unanswered")
    assert named.endswith(")") and named[:-1].split(", ") == f.comms[:3]
    assert sorted(f.comms) == ["app-a", "app-b", "app-c", "app-d"]


def race_pair(pid, n, t=0, sport=33000, **fields):
    """n same-port A+AAAA pairs of one process, each AAAA lost."""
    events = []
    for i in range(n):
        for qtype, answered in (("A", True), ("AAAA", False)):
            events.append(ev("dns", t + i, pid=pid, comm=f"app{pid}", qname=f"db{pid}", qtype=qtype,
                             server="10.96.0.10", sport=sport + i, same_port_pair=True, answered=answered,
                             rcode="NOERROR" if answered else None, latency_ns=1000 if answered else None, **fields))
    return events


def test_queries_of_other_processes_before_the_pairs_do_not_stop_the_grouping():
    other = ev("dns", 0, pid=5, comm="curl", qname="x.test", qtype="A", server="10.96.0.10", sport=1000,
               answered=True, rcode="NOERROR", latency_ns=1000)
    mx = ev("dns", 0, pid=77, comm="app", qname="db", qtype="MX", server="10.96.0.10", sport=1001,
            answered=True, rcode="NOERROR", latency_ns=1000)
    for first in (other, mx):
        [race] = of_rule([first] + race_stream(), "aaaa-same-port-race")
        assert race.evidence["lost_same_port_queries"] == 3


def test_every_process_is_judged_on_its_own():
    # twenty processes with one loss each and no insert failure (not enough), or configured with
    # single-request-reopen (already fixed), do not hide the one process that shows the race
    quiet = [e for pid in range(100, 120) for e in race_pair(pid, 1)]
    configured = [e for pid in range(200, 220)
                  for e in race_pair(pid, 2, resolv_options=["single-request-reopen"], nameservers=["10.96.0.10"])]
    for others in (quiet, configured):
        found = of_rule(others + race_pair(300, 2, t=30), "aaaa-same-port-race")
        assert [f.pids for f in found] == [[300]]
