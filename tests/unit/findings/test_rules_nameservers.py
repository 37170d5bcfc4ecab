"""The nameserver rules one by one, on small recorded streams: thresholds, severities, wording and evidence.

Each rule function is run on a window built as the engine builds it, so that the whole finding
(summary, evidence, fix) can be compared with literal expected values.
"""

from __future__ import annotations

from collections import defaultdict

from test_findings import RESOLV, S, dead_nameserver_stream, ev

from dnstrace.findings.model import Finding
from dnstrace.findings.rules.nameservers import dead_nameserver, slow_nameserver, timeout_multiple_latency
from dnstrace.findings.window import Window

FIX_TAIL = ("; for containers fix the DNS settings the runtime writes "
            "(Docker --dns, Nomad network.dns, Kubernetes dnsPolicy/dnsConfig).")
TIMEOUT_HINT = " Meanwhile 'options timeout:1' caps the wait at 1 s per attempt."


def window(events, now_ns=None):
    """The last 60 s of a recorded stream, as ``engine.evaluate`` cuts it."""
    now_ns = now_ns if now_ns is not None else max(e["ts"] for e in events)
    by_kind = defaultdict(list)
    for e in events:
        if e["ts"] > now_ns - 60 * S:
            by_kind[e["kind"]].append(e)
    return Window(by_kind, now_ns, 60 * S)


def lost(server, i, pid=4711, comm="kafka-writer", qname="kafka.service", **resolv):
    return ev("dns", i, pid=pid, comm=comm, qname=qname, qtype="A", server=server, answered=False, rcode=None,
              sport=40000 + i, id=i, **resolv)


def answer(server, i, pid=4711, comm="kafka-writer", qname="kafka.service", **fields):
    base = {"answered": True, "rcode": "NOERROR", "latency_ns": 2_000_000}
    base.update(fields)
    return ev("dns", i, pid=pid, comm=comm, qname=qname, qtype="A", server=server, sport=41000 + i, id=i, **base)


# --- dead-nameserver --------------------------------------------------------------------


def test_dead_nameserver_whole_finding():
    [f] = dead_nameserver(window(dead_nameserver_stream()))
    assert f == Finding(
        "dead-nameserver", "critical",
        "lookups by pid 4711 (kafka-writer) take 5.00s: nameserver 10.100.0.9 (first in its resolv.conf) never "
        "answered 6 queries; 10.100.0.2 answered. Remove or fix nameserver 10.100.0.9.",
        {"server": "10.100.0.9", "unanswered": 6, "answered_by_server": 0,
         "other_servers_answered": {"10.100.0.2": 6}, "resolv_conf": "/proc/4711/root/etc/resolv.conf",
         "resolv_conf_line": "nameserver 10.100.0.9", "nameservers": ["10.100.0.9", "10.100.0.2"],
         "position": 0, "timeout_s": 5.0, "qnames": ["kafka.service"],
         "lookup_latency_ns": {"median": 5_002_000_000, "max": 5_002_000_000},
         "resolver": None, "lookups_waited": 6},
        "Remove or replace 'nameserver 10.100.0.9' in the resolv.conf this process sees "
        "(/proc/4711/root/etc/resolv.conf)" + FIX_TAIL + TIMEOUT_HINT,
        key="10.100.0.9/4711", pids=[4711], comms=["kafka-writer"], containers=[], confidence="measured")


def test_two_unanswered_queries_are_enough_and_the_answering_server_is_named():
    events = [lost("10.100.0.9", 0, **RESOLV), lost("10.100.0.9", 1, **RESOLV), answer("10.100.0.2", 2, **RESOLV)]
    [f] = dead_nameserver(window(events))
    assert f.summary == ("lookups by pid 4711 (kafka-writer) wait for timeouts: nameserver 10.100.0.9 (first in its "
                         "resolv.conf) never answered 2 queries; 10.100.0.2 answered. Remove or fix nameserver "
                         "10.100.0.9. (judged from the wire alone: this process's resolver is not known)")
    assert f.evidence["other_servers_answered"] == {"10.100.0.2": 1}
    assert f.evidence["lookup_latency_ns"] == {"median": None, "max": None}
    assert f.evidence["lookups_waited"] is None and f.confidence == "wire-only"


def test_an_answer_with_only_an_rcode_counts_and_one_without_either_does_not():
    base = [lost("10.100.0.9", 0, **RESOLV), lost("10.100.0.9", 1, **RESOLV)]
    rcode_only = answer("10.100.0.9", 2, answered=None, rcode="NXDOMAIN", **RESOLV)
    assert dead_nameserver(window(base + [rcode_only])) == []
    neither = answer("10.100.0.9", 2, answered=None, rcode=None, **RESOLV)
    assert [f.evidence["server"] for f in dead_nameserver(window(base + [neither]))] == ["10.100.0.9"]
    # an answer by the dead server to another process does not clear it for this one
    other_process = answer("10.100.0.9", 2, pid=99, comm="other", **RESOLV)
    assert [f.key for f in dead_nameserver(window(base + [other_process]))] == ["10.100.0.9/4711"]


def test_a_node_local_cache_is_never_the_dead_nameserver():
    via = {"pid": 300, "comm": "unbound", "program": "unbound", "server": "10.100.0.9", "port": 53}
    events = [lost("10.100.0.9", 0, **RESOLV), lost("10.100.0.9", 1, **RESOLV),
              ev("lookup", 2, name="kafka.service", latency_ns=10_000_000, source="gai", via=via, **RESOLV)]
    assert dead_nameserver(window(events)) == []
    other_server = dict(via, server="10.100.0.2")
    events[-1] = ev("lookup", 2, name="kafka.service", latency_ns=10_000_000, source="gai", via=other_server,
                    **RESOLV)
    assert [f.key for f in dead_nameserver(window(events))] == ["10.100.0.9/4711"]


def resolv(*servers, options=()):
    return {"nameservers": list(servers), "search": [], "resolv_options": list(options)}


def test_a_second_nameserver_is_a_warning_and_a_fifth_has_no_ordinal():
    second = resolv("10.0.0.1", "10.0.0.9")
    [f] = dead_nameserver(window([lost("10.0.0.9", i, **second) for i in range(3)]))
    assert f.severity == "warning" and f.evidence["position"] == 1
    assert "nameserver 10.0.0.9 (second in its resolv.conf) never answered 3 queries." in f.summary
    fourth = resolv("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9")
    [f] = dead_nameserver(window([lost("10.0.0.9", i, **fourth) for i in range(3)]))
    assert "nameserver 10.0.0.9 (fourth in its resolv.conf) never" in f.summary and f.severity == "warning"
    fifth = resolv("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.9")
    [f] = dead_nameserver(window([lost("10.0.0.9", i, **fifth) for i in range(3)]))
    assert f.evidence["position"] == 4 and f.severity == "warning"
    assert "nameserver 10.0.0.9 never answered 3 queries" in f.summary
    unlisted = resolv("10.0.0.1")
    [f] = dead_nameserver(window([lost("10.0.0.9", i, **unlisted) for i in range(3)]))
    assert f.evidence["position"] is None and f.severity == "warning"
    assert "nameserver 10.0.0.9 never answered 3 queries." in f.summary


def test_the_answering_server_named_is_the_first_in_resolv_conf_then_the_lowest_address():
    conf = resolv("10.0.0.9", "10.0.0.7", "10.0.0.3")
    events = [lost("10.0.0.9", 0, **conf), lost("10.0.0.9", 1, **conf),
              answer("10.0.0.3", 2, **conf), answer("10.0.0.7", 3, **conf)]
    [f] = dead_nameserver(window(events))
    assert "never answered 2 queries; 10.0.0.7 answered." in f.summary
    assert f.evidence["other_servers_answered"] == {"10.0.0.3": 1, "10.0.0.7": 1}
    # answering servers outside resolv.conf: the lowest address is named
    conf = resolv("10.0.0.9")
    events = [lost("10.0.0.9", 0, **conf), lost("10.0.0.9", 1, **conf),
              answer("10.0.0.7", 2, **conf), answer("10.0.0.3", 3, **conf)]
    [f] = dead_nameserver(window(events))
    assert "never answered 2 queries; 10.0.0.3 answered." in f.summary


def test_evidence_lists_at_most_eight_other_servers_and_five_names():
    conf = resolv("10.0.0.99")
    events = [lost("10.0.0.99", i, qname=f"n{i}.test", **conf) for i in range(7)]
    events += [lost("10.0.0.99", 7, qname="n0.test", **conf)]
    events += [answer(f"10.0.0.{i}", 10 + i, **conf) for i in range(1, 10)]
    [f] = dead_nameserver(window(events))
    assert f.evidence["other_servers_answered"] == {f"10.0.0.{i}": 1 for i in range(1, 9)}
    assert f.evidence["qnames"][0] == "n0.test" and len(f.evidence["qnames"]) == 5
    assert f.evidence["unanswered"] == 8


def gai_lookup(t, latency_ns, **fields):
    return ev("lookup", t, name="kafka.service", latency_ns=latency_ns, error=None, source="gai", **fields)


def test_lookup_latency_claims_count_only_waits_of_half_a_second_or_more():
    conf = resolv("10.0.0.9", "10.0.0.2", options=["timeout:1"])
    events = [lost("10.0.0.9", 0, **conf), lost("10.0.0.9", 1, **conf),
              gai_lookup(2, 500_000_000, **conf), gai_lookup(3, 499_999_999, **conf),
              gai_lookup(4, 2_000_000_000, **conf), gai_lookup(5, 0, **conf)]
    [f] = dead_nameserver(window(events))
    assert f.evidence["lookup_latency_ns"] == {"median": 1_250_000_000, "max": 2_000_000_000}
    assert f.evidence["timeout_s"] == 1.0 and f.evidence["lookups_waited"] == 4
    assert f.fix.endswith(FIX_TAIL)  # timeout:1 already: no advice to lower it
    assert "take 1.25s: nameserver 10.0.0.9" in f.summary


def test_lookups_that_never_waited_make_an_info_with_their_median():
    conf = resolv("10.0.0.9", "10.0.0.2")
    events = [lost("10.0.0.9", 0, **conf), lost("10.0.0.9", 1, **conf),
              gai_lookup(2, 10_000_000, waited_timeouts=False, resolver="musl", **conf),
              gai_lookup(3, 30_000_000, waited_timeouts=False, resolver="musl", **conf)]
    [f] = dead_nameserver(window(events))
    assert f.severity == "info" and f.evidence["lookups_waited"] == 0 and f.evidence["resolver"] == "musl"
    assert f.summary == ("pid 4711 (kafka-writer) did not wait for it (musl asks every nameserver at once; the first "
                         "answer wins), its lookups take 20.0ms: nameserver 10.0.0.9 (first in its resolv.conf) "
                         "never answered 2 queries. Remove or fix nameserver 10.0.0.9.")
    assert f.evidence["lookup_latency_ns"] == {"median": None, "max": 30_000_000}
    glibc = [dict(e, resolver="glibc") if e["kind"] == "lookup" else e for e in events]
    [f] = dead_nameserver(window(glibc))
    assert f.summary.startswith("pid 4711 (kafka-writer) did not wait for it, its lookups take 20.0ms: ")


def test_without_lookup_events_gai_latencies_and_the_wire_decide():
    conf = resolv("10.0.0.9", "10.0.0.2")
    wire = [lost("10.0.0.9", 0, **conf), lost("10.0.0.9", 6, **conf)]
    [f] = dead_nameserver(window(wire))
    assert f.confidence == "wire-only" and f.severity == "critical"
    assert f.summary == ("lookups by pid 4711 (kafka-writer) wait for timeouts: nameserver 10.0.0.9 (first in its "
                         "resolv.conf) never answered 2 queries. Remove or fix nameserver 10.0.0.9. (judged from the "
                         "wire alone: this process's resolver is not known)")
    assert f.evidence["lookups_waited"] is None and f.evidence["resolver"] is None
    gai = [ev("gai", 1, name="kafka.service", latency_ns=lat, **conf) for lat in (500_000_000, 499_999_999, 4 * S)]
    [f] = dead_nameserver(window(wire + gai))
    assert f.confidence == "measured" and f.evidence["lookup_latency_ns"] == {"median": 2_250_000_000,
                                                                              "max": 4 * S}
    assert "lookups by pid 4711 (kafka-writer) take 2.25s: nameserver" in f.summary
    # one question to both servers within milliseconds: musl, which waits for no timeout
    musl = wire + [answer("10.0.0.2", 0, **conf)]
    [f] = dead_nameserver(window(musl))
    assert f.severity == "info" and f.evidence["resolver"] == "musl" and f.confidence == "wire"
    assert f.summary.startswith("pid 4711 (kafka-writer) did not wait for it (musl asks every nameserver at once")


def test_agent_losses_mark_a_dead_nameserver_unreliable_against_its_unanswered_count():
    agent = ev("agent", 3, pid=1, comm="dnstrace", source="dns", dns_lost=3)
    conf = resolv("10.0.0.9")
    [f] = dead_nameserver(window([lost("10.0.0.9", i, **conf) for i in range(3)] + [agent]))
    assert f.severity == "info" and f.evidence["agent_lost_dns_records"] == 3
    [f] = dead_nameserver(window([lost("10.0.0.9", i, **conf) for i in range(4)] + [agent]))
    assert f.severity == "warning" and "so some answers may not have been seen" in f.summary


# --- slow-nameserver --------------------------------------------------------------------


def test_slow_nameserver_whole_finding_at_the_threshold():
    events = [answer("10.0.0.5", i, latency_ns=lat) for i, lat in enumerate((300_000_000, 200_000_000, 900_000_000))]
    events.append(answer("10.0.0.5", 4, pid=77, comm="tcp-client", proto="tcp", latency_ns=5 * S))
    events.append(answer("10.0.0.5", 5, pid=77, comm="no-latency", latency_ns=None))
    events.append(lost("10.0.0.5", 6, pid=78, comm="lost"))
    assert slow_nameserver(window(events)) == [Finding(
        "slow-nameserver", "warning",
        "nameserver 10.0.0.5 answers slowly: median 300.0ms over 3 answers (queries by pid 4711 (kafka-writer) and "
        "others)",
        {"server": "10.0.0.5", "answers": 3, "median_ns": 300_000_000, "max_ns": 900_000_000},
        "Find out why 10.0.0.5 is slow (overloaded, slow upstream, packet loss on the way); list a faster "
        "nameserver first or run a node-local cache.",
        key="10.0.0.5", pids=[4711], comms=["kafka-writer"], containers=[])]


def test_slow_nameserver_needs_three_answers_and_a_median_of_300_ms():
    three = [answer("10.0.0.5", i, latency_ns=400_000_000) for i in range(3)]
    assert [f.key for f in slow_nameserver(window(three))] == ["10.0.0.5"]
    assert slow_nameserver(window(three[:2])) == []
    just_under = [answer("10.0.0.5", i, latency_ns=299_999_999) for i in range(3)]
    assert slow_nameserver(window(just_under)) == []
    assert [f.key for f in slow_nameserver(window(just_under), threshold_ns=299_999_999)] == ["10.0.0.5"]


def test_slow_nameserver_answers_skip_other_servers_and_unanswered_queries():
    events = [answer("10.0.0.5", i, latency_ns=400_000_000) for i in range(3)]
    events += [answer("10.0.0.6", 3, latency_ns=1000), answer("10.0.0.5", 4, answered=False, latency_ns=1)]
    [f] = slow_nameserver(window(events))
    assert f.evidence["answers"] == 3 and f.evidence["max_ns"] == 400_000_000


# --- timeout-multiple-latency -------------------------------------------------------------


def lookup(t, seconds, pid=4711, **fields):
    conf = fields.pop("conf", resolv("10.0.0.1", options=["timeout:2"]))
    fields.setdefault("source", "gai")
    return ev("lookup", t, pid=pid, name=f"n{t}.test", latency_ns=int(seconds * S), error=None, **conf, **fields)


def test_timeout_multiples_whole_finding():
    events = [lookup(0, 2.0), lookup(1, 4.1), lookup(2, 2.2), lookup(3, 0.01)]
    assert timeout_multiple_latency(window(events)) == [Finding(
        "timeout-multiple-latency", "warning",
        "3 of 4 lookups by pid 4711 (kafka-writer) took whole multiples of its 2 s resolver timeout (2 s x2, 4 s x1): "
        "queries are lost and retried only after the timeout",
        {"timeout_s": 2.0, "lookups": 4, "at_timeout_multiples": 3, "multiples": {1: 2, 2: 1},
         "names": ["n0.test", "n1.test", "n2.test"], "resolv_options": ["ndots:1", "timeout:2", "attempts:2"],
         "nameservers": ["10.0.0.1"]},
        "See the other findings for which query is lost (dead nameserver, conntrack race, dropped SYNs); until "
        "fixed, 'options timeout:1 attempts:2' in resolv.conf shortens each wait.",
        key="4711", pids=[4711], comms=["kafka-writer"], containers=[], confidence="measured")]


def test_timeout_multiples_boundaries():
    one = resolv("10.0.0.1", options=["timeout:1"])
    # 0.8 of the timeout is the lowest a lookup may take; 0.25 s is the tolerance below a 1.67 s timeout
    at_edges = [lookup(0, 0.8, conf=one), lookup(1, 1.25, conf=one)]
    assert [f.evidence["multiples"] for f in timeout_multiple_latency(window(at_edges))] == [{1: 2}]
    below = [lookup(0, 0.79, conf=one), lookup(1, 1.0, conf=one)]
    assert timeout_multiple_latency(window(below)) == []
    off = [lookup(0, 1.26, conf=one), lookup(1, 1.0, conf=one), lookup(2, 1.0, conf=one)]
    assert [f.evidence["at_timeout_multiples"] for f in timeout_multiple_latency(window(off))] == [2]
    # from 1.67 s on the tolerance is 15 % of the timeout: 0.75 s for 5 s
    five = resolv("10.0.0.1")
    wide = [lookup(0, 5.75, conf=five), lookup(1, 9.25, conf=five)]
    assert [f.evidence["multiples"] for f in timeout_multiple_latency(window(wide))] == [{1: 1, 2: 1}]
    too_wide = [lookup(0, 5.76, conf=five), lookup(1, 10.0, conf=five), lookup(2, 10.0, conf=five)]
    assert [f.evidence["multiples"] for f in timeout_multiple_latency(window(too_wide))] == [{2: 2}]


def test_timeout_multiples_need_two_and_sixty_percent_of_the_slow_lookups():
    assert timeout_multiple_latency(window([lookup(0, 2.0), lookup(1, 0.1)])) == []
    three_of_five = [lookup(0, 2.0), lookup(1, 4.0), lookup(2, 6.0), lookup(3, 3.0), lookup(4, 4.9)]
    assert [f.evidence["at_timeout_multiples"] for f in timeout_multiple_latency(window(three_of_five))] == [3]
    two_of_four = [lookup(0, 2.0), lookup(1, 4.0), lookup(2, 3.0), lookup(3, 4.9)]
    assert timeout_multiple_latency(window(two_of_four)) == []


def test_timeout_multiples_skip_lookups_that_never_waited_and_read_gai_without_lookups():
    never_waited = [lookup(0, 2.0, waited_timeouts=False), lookup(1, 4.0, waited_timeouts=False), lookup(2, 2.0)]
    assert timeout_multiple_latency(window(never_waited)) == []
    conf = resolv("10.0.0.1", options=["timeout:2"])
    gai = [ev("gai", t, name="a", latency_ns=2 * S, **conf) for t in range(2)]
    [f] = timeout_multiple_latency(window(gai))
    assert f.evidence["multiples"] == {1: 2} and f.confidence == "measured"
    # a process with no lookup of 0.8 s or more is not a candidate, whatever its timeout
    other = [lookup(0, 2.0, pid=5), lookup(1, 2.0, pid=5), lookup(2, 0.5), lookup(3, 0.5)]
    assert [f.pids for f in timeout_multiple_latency(window(other))] == [[5]]


def test_timeout_multiples_from_the_wire_are_marked_under_agent_losses():
    wire = [lookup(0, 2.0, source="wire", resolver="glibc"), lookup(1, 2.0, source="wire", resolver="glibc"),
            lookup(2, 2.0, resolver="glibc")]
    [f] = timeout_multiple_latency(window(wire))
    assert f.severity == "warning" and f.confidence == "measured"
    only_wire = wire[:2]
    [f] = timeout_multiple_latency(window(only_wire))
    assert f.confidence == "wire" and not f.summary.endswith(")")
    agent = ev("agent", 3, pid=1, comm="dnstrace", source="dns", dns_lost=2)
    [f] = timeout_multiple_latency(window(wire + [agent]))
    assert f.severity == "info" and f.evidence["agent_lost_dns_records"] == 2
    assert f.summary.startswith("unreliable: the agent itself lost 2 DNS records in the last 60 s, enough to explain "
                                "the 2 missing answers: 3 of 3 lookups by pid 4711")
    agent1 = dict(agent, dns_lost=1)
    [f] = timeout_multiple_latency(window(wire + [agent1]))
    assert f.severity == "info" and "so some answers may not have been seen" in f.summary
    unknown = [dict(e, resolver="unknown") for e in only_wire]
    [f] = timeout_multiple_latency(window(unknown))
    assert f.confidence == "wire-only" and f.summary.endswith(
        " (judged from the wire alone: this process's resolver is not known)")


def test_a_process_whose_lookups_all_take_exactly_eight_tenths_of_a_one_second_timeout():
    one = resolv("10.0.0.1", options=["timeout:1"])
    [f] = timeout_multiple_latency(window([lookup(0, 0.8, conf=one), lookup(1, 0.8, conf=one)]))
    assert f.evidence["multiples"] == {1: 2}
    # a nanosecond past the 0.25 s tolerance is not a multiple
    past = [lookup(0, 1.0, conf=one), lookup(1, 1.0, conf=one),
            ev("lookup", 2, name="x", latency_ns=1_250_000_001, error=None, source="gai", **one)]
    [f] = timeout_multiple_latency(window(past))
    assert f.evidence["at_timeout_multiples"] == 2 and f.evidence["lookups"] == 3


def test_fast_lookups_do_not_count_against_the_sixty_percent():
    [f] = timeout_multiple_latency(window([lookup(0, 2.0), lookup(1, 4.0), lookup(2, 0.1), lookup(3, 0.1)]))
    assert f.evidence["at_timeout_multiples"] == 2 and f.evidence["lookups"] == 4
    assert f.summary.startswith("2 of 4 lookups by pid 4711 (kafka-writer) took whole multiples of its 2 s ")


def test_each_rule_goes_on_past_a_server_or_process_it_skips():
    conf = resolv("10.0.0.9", "10.0.0.2")
    # dead-nameserver: one lost query to 10.0.0.8 first, then a cache, then the dead server
    via = {"pid": 300, "comm": "unbound", "server": "10.0.0.7"}
    events = [lost("10.0.0.8", 0, **conf), lost("10.0.0.7", 1, **conf), lost("10.0.0.7", 2, **conf),
              ev("lookup", 3, name="kafka.service", latency_ns=S, error=None, source="gai", via=via, **conf),
              lost("10.0.0.9", 4, **conf), lost("10.0.0.9", 5, **conf)]
    assert [f.key for f in dead_nameserver(window(events))] == ["10.0.0.9/4711"]
    # slow-nameserver: too few answers, then fast answers, then the slow server
    events = ([answer("10.0.0.1", 0, latency_ns=S)] + [answer("10.0.0.2", i, latency_ns=1000) for i in range(3)]
              + [answer("10.0.0.5", i, latency_ns=S) for i in range(3)])
    assert [f.key for f in slow_nameserver(window(events))] == ["10.0.0.5"]
    # timeout-multiple-latency: a process with no slow lookup, one with one, one off the multiples, then one that fires
    events = ([lookup(0, 0.1, pid=1), lookup(1, 2.0, pid=2), lookup(2, 3.0, pid=3), lookup(3, 3.0, pid=3)]
              + [lookup(4, 2.0, pid=4), lookup(5, 4.0, pid=4)])
    assert [f.pids for f in timeout_multiple_latency(window(events))] == [[4]]


def test_timeout_multiples_name_the_five_most_frequent_names():
    events = [lookup(t, 2.0) for t in range(6)] + [dict(lookup(9, 4.0), name="n0.test")]
    [f] = timeout_multiple_latency(window(events))
    assert f.evidence["names"] == ["n0.test", "n1.test", "n2.test", "n3.test", "n4.test"]


def test_a_two_second_timeout_still_gets_the_advice_to_lower_it():
    conf = resolv("10.0.0.9", options=["timeout:2"])
    [f] = dead_nameserver(window([lost("10.0.0.9", i, **conf) for i in range(2)]))
    assert f.evidence["timeout_s"] == 2.0 and f.fix.endswith(FIX_TAIL + TIMEOUT_HINT)


def test_gai_calls_of_another_process_do_not_make_a_claim_measured():
    conf = resolv("10.0.0.9")
    events = [lost("10.0.0.9", i, **conf) for i in range(2)]
    events.append(ev("gai", 3, pid=99, comm="other", name="x", latency_ns=S, **conf))
    [f] = dead_nameserver(window(events))
    assert f.confidence == "wire-only" and f.evidence["lookup_latency_ns"] == {"median": None, "max": None}
