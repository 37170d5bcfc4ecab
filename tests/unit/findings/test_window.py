"""The window the rules read: its views (queries, facts, per-process groups, resolv.conf, lookups,
caches, conntrack totals) and the caveat rules concluding from silence add under the agent's losses."""

from __future__ import annotations

from collections import Counter

from dnstrace.enrich.resolvconf import ResolvConf
from dnstrace.findings.window import NO_RESOLV_CONF, QueryFacts, Window, mark_unreliable, shown_options


def q(**fields):
    return {"kind": "dns", **fields}


# --- QueryFacts ---------------------------------------------------------------------------


def test_unanswered_needs_a_server_and_answered_ones_give_udp_latencies():
    queries = [
        q(answered=False, server="10.0.0.1", qname="a", tc=True, latency_ns=7),
        q(answered=False, qname="b"),  # no server: nobody to blame
        q(answered=True, server="10.0.0.1", latency_ns=0),  # 0 is a latency
        q(server="10.0.0.2", latency_ns=5),  # no "answered" field and no proto: an answered UDP query
        q(answered=True, server="10.0.0.2", latency_ns=9, proto="udp"),
        q(answered=True, server="10.0.0.2", latency_ns=11, proto="tcp"),
        q(answered=True, latency_ns=13),  # no server
        q(answered=True, server="10.0.0.3"),  # no latency
    ]
    facts = QueryFacts(queries)
    assert facts.unanswered == [queries[0]]
    assert dict(facts.server_latencies) == {"10.0.0.1": [0], "10.0.0.2": [5, 9]}
    assert facts.truncated == []  # the unanswered TC query does not count


def test_truncated_nxdomain_fallbacks_and_same_port_pairs():
    tc = q(answered=True, tc=True, server="s")
    nx_answered = q(answered=True, rcode="NXDOMAIN")
    nx_unanswered = q(answered=False, rcode="NXDOMAIN")
    flagged = q(tcp_fallback=True, proto="udp")
    tcp_after_tc = q(proto="tcp", after_tc=True)
    tcp_plain = q(proto="tcp")
    udp_after_tc = q(proto="udp", after_tc=True)
    pair_a = q(same_port_pair=True, qtype="A")
    pair_aaaa = q(same_port_pair=True, qtype="AAAA")
    pair_mx = q(same_port_pair=True, qtype="MX")
    not_pair = q(same_port_pair=False, qtype="A")
    facts = QueryFacts([tc, nx_answered, nx_unanswered, flagged, tcp_after_tc, tcp_plain, udp_after_tc,
                        pair_a, pair_aaaa, pair_mx, not_pair])
    assert facts.truncated == [tc]
    assert facts.nxdomain == [nx_answered, nx_unanswered]
    assert facts.fallbacks == [flagged, tcp_after_tc]
    assert facts.same_port == [pair_a, pair_aaaa]


def test_name_counts_take_first_udp_transmissions_with_a_name():
    facts = QueryFacts([
        q(qname="Api.Test", qtype="A"),
        q(qname="Api.Test", qtype="A", proto="udp"),
        q(qname="api.test", qtype="A"),
        q(qname="api.test", qtype="AAAA"),
        q(qname="api.test", qtype="A", retransmit=True),
        q(qname="api.test", qtype="A", proto="tcp"),
        q(qname="", qtype="A"),
        q(qtype="A"),
    ])
    assert facts.name_counts == Counter({("Api.Test", "A"): 2, ("api.test", "A"): 1, ("api.test", "AAAA"): 1})
    assert facts.case_folded_counts() == Counter({("api.test", "A"): 3, ("api.test", "AAAA"): 1})


# --- Window basics ------------------------------------------------------------------------


def test_kind_window_seconds_and_gai_traced():
    gai = {"kind": "gai", "pid": 1}
    w = Window({"gai": [gai]}, now_ns=123, window_ns=30_000_000_000)
    assert w.kind("gai") == [gai] and w.kind("dns") == []
    assert w.window_s == 30.0 and w.now_ns == 123 and w.window_ns == 30_000_000_000
    assert w.gai_traced is True
    assert Window({"gai": []}, 0).gai_traced is False
    assert Window({}, 0).gai_traced is False
    assert Window({"gai": [gai]}, 0, gai_traced=False).gai_traced is False
    assert Window({}, 0, gai_traced=True).gai_traced is True
    assert Window({}, 0).window_s == 60.0


def test_queries_add_lookup_attempts_no_dns_event_repeats_and_fill_in_the_lookups_fields():
    dns = {"kind": "dns", "pid": 7, "ts": 100, "id": 1, "sport": 5000, "qname": "a.test"}
    lookup = {"kind": "lookup", "pid": 7, "comm": "app", "process": "app-main", "container": "c1",
              "nameservers": ["10.0.0.1"], "resolv_options": ["ndots:5"], "search": ["svc"],
              "resolv_conf": {"ndots": 5}, "name": "a.test", "attempts": [
                  {"ts": 100, "id": 1, "sport": 5000},  # the dns event above: not repeated
                  {"ts": 200, "id": 2, "sport": 5001, "server": "10.0.0.1"},
                  {"ts": 300, "id": 3, "sport": 5002, "qname": "a.test.svc", "comm": "worker"},
                  "not an attempt",
              ]}
    other = {"kind": "lookup", "pid": 8, "name": "b.test", "attempts": [{"ts": 100, "id": 1, "sport": 5000}]}
    bare = {"kind": "lookup", "pid": 9, "name": "c.test"}
    w = Window({"dns": [dns], "lookup": [lookup, other, bare]}, 0)
    queries = w.queries()
    assert queries == [
        dns,
        {"ts": 200, "id": 2, "sport": 5001, "server": "10.0.0.1", "pid": 7, "comm": "app", "process": "app-main",
         "container": "c1", "nameservers": ["10.0.0.1"], "resolv_options": ["ndots:5"], "search": ["svc"],
         "resolv_conf": {"ndots": 5}, "qname": "a.test"},
        {"ts": 300, "id": 3, "sport": 5002, "qname": "a.test.svc", "comm": "worker", "pid": 7, "process": "app-main",
         "container": "c1", "nameservers": ["10.0.0.1"], "resolv_options": ["ndots:5"], "search": ["svc"],
         "resolv_conf": {"ndots": 5}},
        # another process's attempt with the same ts, id and port is its own query
        {"ts": 100, "id": 1, "sport": 5000, "pid": 8, "comm": None, "process": None, "container": None,
         "nameservers": None, "resolv_options": None, "search": None, "resolv_conf": None, "qname": "b.test"},
    ]
    assert w.queries() is queries  # computed once
    assert "pid" not in lookup["attempts"][1]  # the lookup's own attempts are left as they were
    assert w.facts() is w.facts()
    assert w.facts().name_counts == Counter({("a.test", None): 2, ("a.test.svc", None): 1, ("b.test", None): 1})


def test_queries_without_lookup_attempts_are_the_dns_events():
    dns = [{"kind": "dns", "pid": 7, "ts": 1}]
    w = Window({"dns": dns, "lookup": [{"kind": "lookup", "pid": 7, "attempts": []}]}, 0)
    assert w.queries() == dns
    assert Window({}, 0).queries() == []


# --- grouping by process ----------------------------------------------------------------------


def test_by_process_of_a_recorded_stream_groups_by_pid_and_name():
    a1 = {"pid": 5, "comm": "a"}
    a2 = {"pid": 5, "comm": "a"}
    b = {"pid": 6, "comm": "t", "process": "b"}
    nopid = {"pid": 0, "comm": "x"}
    w = Window({"dns": [a1, b, a2, nopid]}, 0)
    assert dict(w.by_process("dns")) == {(5, "a"): [a1, a2], (6, "b"): [b]}
    assert dict(w.by_process("gai")) == {}


def test_by_process_reads_the_engines_buffers_and_splits_a_process_that_exec_d():
    a1 = {"pid": 5, "comm": "a"}
    a2 = {"pid": 5, "comm": "a"}
    before = {"pid": 6, "comm": "sh"}
    after = {"pid": 6, "comm": "app"}
    zero = {"pid": 0, "comm": "z"}
    buffers = {"dns": {0: [zero], 5: [a1, a2], 6: [before, after]}}  # pid 0 (no pid) first: skipped
    w = Window({"dns": [a1, a2, before, after, zero], "gai": [a1]}, 0, by_pid=buffers)
    groups = w.by_process("dns")
    assert dict(groups) == {(5, "a"): [a1, a2], (6, "sh"): [before], (6, "app"): [after]}
    assert groups[(5, "a")] is buffers["dns"][5]  # the buffer itself, not a copy
    # a kind the buffers do not hold: grouped from the events
    assert dict(w.by_process("gai")) == {(5, "a"): [a1]}


def test_queries_by_process_uses_the_dns_buffers_unless_lookups_add_queries():
    d1 = {"kind": "dns", "pid": 5, "comm": "a", "ts": 1}
    buffered = {"kind": "dns", "pid": 5, "comm": "a", "ts": 1, "from": "buffer"}
    w = Window({"dns": [d1]}, 0, by_pid={"dns": {5: [buffered]}})
    groups = w.queries_by_process()
    assert dict(groups) == {(5, "a"): [buffered]}
    assert w.queries_by_process() is groups
    lookup = {"kind": "lookup", "pid": 5, "comm": "a", "name": "x", "attempts": [{"ts": 2, "id": 1, "sport": 1}]}
    w = Window({"dns": [d1], "lookup": [lookup]}, 0, by_pid={"dns": {5: [buffered]}})
    groups = w.queries_by_process()
    assert list(groups) == [(5, "a")]
    assert [e["ts"] for e in groups[(5, "a")]] == [1, 2] and "from" not in groups[(5, "a")][0]


# --- the agent's losses, lookups, resolv.conf ------------------------------------------------------


def test_dns_records_lost_adds_up_agent_events():
    w = Window({"agent": [{"dns_lost": 3}, {"dns_lost": None}, {}, {"dns_lost": "4"}]}, 0)
    assert w.dns_records_lost() == 7
    assert Window({}, 0).dns_records_lost() == 0


def test_lookups_are_lookup_events_else_gai_calls():
    lookup, gai = {"kind": "lookup"}, {"kind": "gai"}
    assert Window({"lookup": [lookup], "gai": [gai]}, 0).lookups() == [lookup]
    assert Window({"lookup": [], "gai": [gai]}, 0).lookups() == [gai]


def test_process_resolv_takes_the_latest_event_carrying_one_lookup_events_first():
    dns_conf = {"kind": "dns", "pid": 5, "nameservers": ["10.0.0.3"], "search": [], "resolv_options": []}
    gai_old = {"kind": "gai", "pid": 5, "nameservers": ["10.0.0.1"], "search": [], "resolv_options": ["ndots:2"]}
    gai_new = {"kind": "gai", "pid": 5, "resolv_conf": {"nameservers": ["10.0.0.2"], "ndots": 3}}
    gai_none = {"kind": "gai", "pid": 5, "nameservers": [], "resolv_conf": "not a dict"}
    w = Window({"dns": [dns_conf], "gai": [gai_old, gai_new, gai_none]}, 0)
    conf = w.process_resolv(5)
    assert conf.nameservers == ("10.0.0.2",) and conf.ndots == 3
    assert w.process_resolv(5) is conf
    lookup = {"kind": "lookup", "pid": 5, "nameservers": ["10.0.0.4"], "search": ["s"], "resolv_options": []}
    w = Window({"dns": [dns_conf], "gai": [gai_old], "lookup": [lookup]}, 0)
    assert w.process_resolv(5).nameservers == ("10.0.0.4",) and w.process_resolv(5).search == ("s",)
    w = Window({"dns": [dns_conf], "gai": [gai_none]}, 0)
    assert w.process_resolv(5).nameservers == ("10.0.0.3",)


def test_process_resolv_without_an_event_carrying_one_is_glibcs_defaults():
    w = Window({"dns": [{"kind": "dns", "pid": 5, "search": ["x"]}]}, 0)
    assert w.process_resolv(5) is NO_RESOLV_CONF
    assert w.process_resolv(6) is NO_RESOLV_CONF


def test_process_resolv_groups_events_without_pid_under_zero():
    e = {"kind": "dns", "pid": None, "nameservers": ["10.0.0.9"]}
    w = Window({"dns": [e]}, 0)
    assert w.process_resolv(None).nameservers == ("10.0.0.9",)
    assert Window({"dns": [e]}, 0).process_resolv(0).nameservers == ("10.0.0.9",)


def test_process_resolv_reads_the_engines_buffers_when_given():
    e = {"kind": "dns", "pid": 5, "nameservers": ["10.0.0.9"]}
    w = Window({"dns": []}, 0, by_pid={"dns": {5: [e]}})
    assert w.process_resolv(5).nameservers == ("10.0.0.9",)
    w = Window({"dns": [e]}, 0, by_pid={"dns": {}})
    assert w.process_resolv(5) is NO_RESOLV_CONF


def test_slow_lookups_of_sorts_the_latencies_of_the_process():
    lookups = [{"pid": 5, "latency_ns": 30}, {"pid": 5, "latency_ns": "10"}, {"pid": 5, "latency_ns": 0},
               {"pid": 5}, {"pid": 6, "latency_ns": 20}]
    w = Window({"lookup": lookups}, 0)
    assert w.slow_lookups_of(5) == [10, 30]
    assert w.slow_lookups_of(6) == [20]
    assert w.slow_lookups_of(7) == []
    assert Window({"gai": [{"pid": 5, "latency_ns": 4}]}, 0).slow_lookups_of(5) == [4]


def test_lookups_of_and_resolver_of():
    first = {"kind": "lookup", "pid": 5, "resolver": "glibc"}
    later = {"kind": "lookup", "pid": 5, "resolver": "musl"}
    last = {"kind": "lookup", "pid": 5, "resolver": None}
    w = Window({"lookup": [first, later, last, {"kind": "lookup", "pid": 6}], "gai": [{"pid": 5}]}, 0)
    assert w.lookups_of(5) == [first, later, last]
    assert w.lookups_of(7) == []
    assert w.resolver_of(5) == "musl"
    assert w.resolver_of(6) is None
    assert w.resolver_of(7) is None


def test_caches_used_maps_app_and_nameserver_to_the_local_cache():
    via = {"server": "127.0.0.53", "pid": 300, "comm": "systemd-resolve"}
    w = Window({"lookup": [{"pid": 5, "via": via}, {"pid": 6, "via": {"pid": 1}}, {"pid": 7, "via": "x"},
                           {"pid": 8}]}, 0)
    assert w.caches_used() == {(5, "127.0.0.53"): via}
    assert w.caches_used() is w.caches_used()


def test_conntrack_totals_add_every_counter():
    w = Window({"conntrack": [{"insert_failed": 2, "drop": 1}, {"insert_failed": 3, "drop": None, "invalid": "4"}]}, 0)
    assert w.conntrack_totals() == {"insert_failed": 5, "drop": 1, "early_drop": 0, "invalid": 4, "clash_resolve": 0,
                                    "search_restart": 0}
    assert Window({}, 0).conntrack_totals() == {}


# --- shown options and the unreliable caveat ------------------------------------------------------


def test_shown_options_only_for_a_resolv_conf_seen():
    assert shown_options(NO_RESOLV_CONF) == []
    assert shown_options(ResolvConf()) == ["ndots:1", "timeout:5", "attempts:2"]
    assert shown_options(ResolvConf(ndots=5, rotate=True)) == ["ndots:5", "timeout:5", "attempts:2", "rotate"]


def agent(lost):
    return {"kind": "agent", "dns_lost": lost}


def test_mark_unreliable_without_loss_changes_nothing():
    evidence: dict = {}
    assert mark_unreliable(Window({}, 0), 3, "critical", "s", evidence) == ("critical", "s")
    assert evidence == {}


def test_mark_unreliable_when_the_losses_explain_every_missing_answer():
    evidence: dict = {}
    w = Window({"agent": [agent(3)]}, 0, window_ns=30_000_000_000)
    assert mark_unreliable(w, 3, "critical", "dead server", evidence) == (
        "info", "unreliable: the agent itself lost 3 DNS records in the last 30 s, "
                "enough to explain the 3 missing answers: dead server")
    assert evidence == {"agent_lost_dns_records": 3}


def test_mark_unreliable_when_some_answers_may_not_have_been_seen():
    evidence: dict = {}
    w = Window({"agent": [agent(2)]}, 0)
    assert mark_unreliable(w, 3, "critical", "dead server", evidence) == (
        "warning", "unreliable: the agent itself lost 2 DNS records in the last 60 s, "
                   "so some answers may not have been seen: dead server")
    assert evidence == {"agent_lost_dns_records": 2}
