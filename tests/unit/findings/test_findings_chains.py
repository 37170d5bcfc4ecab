"""Findings with resolver chains and resolver models, on recorded streams shaped as dnstrace emits them."""

from __future__ import annotations

from test_findings import T0, S, ev

from dnstrace.findings.engine import evaluate

APP, CACHE = 4711, 300
VIA = {"pid": CACHE, "comm": "unbound", "program": "unbound", "server": "127.0.0.1", "port": 53}
RESOLV = {"nameservers": ["127.0.0.1"], "search": [], "resolv_options": ["timeout:2", "attempts:1"]}


def chain_stream(n=6, syn_drops=True):
    events = []
    for i in range(n):
        t = i * 3
        attempt = {"ts": T0 + int(t * S), "qname": "web.example.test", "qtype": "A", "server": "127.0.0.1",
                   "dport": 53, "proto": "udp", "sport": 40000 + i, "id": i, "answered": False, "rcode": None,
                   "latency_ns": None, "upstream": []}
        events.append(ev("lookup", t, pid=APP, comm="checkout-api", name="web.example.test", latency_ns=2 * S,
                         error="EAI_AGAIN", source="gai", resolver="glibc", waited_timeouts=True,
                         attempts=[attempt], via=VIA, **RESOLV))
        events.append(ev("dns", t, pid=APP, comm="checkout-api", qname="web.example.test", qtype="A",
                         server="127.0.0.1", answered=False, rcode=None, sport=40000 + i, id=i, **RESOLV))
        if syn_drops:
            events.append(ev("syn_retry", t + 1, pid=CACHE, comm="unbound", daddr="10.53.0.2", dport=53, count=2))
    return events


def test_slow_lookups_through_a_local_cache_blame_its_upstream_hop():
    findings = evaluate(chain_stream())
    [chain] = [f for f in findings if f.rule == "local-cache-upstream"]
    assert chain.pids == [APP, CACHE] and chain.comms == ["checkout-api", "unbound"]
    assert "pid 4711 (checkout-api)" in chain.summary and "unbound (pid 300, unbound) on 127.0.0.1" in chain.summary
    assert "10.53.0.2:53" in chain.summary and chain.evidence["upstream_syn_retransmits"] == 12
    assert "tcp-upstream: no" in chain.fix and "Keep 'nameserver 127.0.0.1'" in chain.fix
    assert chain.severity == "critical" and chain.confidence == "measured"
    [syn] = [f for f in findings if f.rule == "syn-retransmits"]
    assert "it is the local cache of pid 4711 (checkout-api)" in syn.summary and APP in syn.pids
    # the working cache is never the nameserver to remove
    assert not [f for f in findings if f.rule == "dead-nameserver" and "127.0.0.1" in f.summary]


def test_local_cache_without_upstream_evidence_says_so_and_stays_a_warning():
    [chain] = [f for f in evaluate(chain_stream(syn_drops=False)) if f.rule == "local-cache-upstream"]
    assert chain.severity == "warning" and "nothing failing was seen" in chain.summary
    assert "Remove" not in chain.fix


def test_cache_miss_storm_counts_each_hop_and_blames_the_cache_hop():
    events = []
    for i in range(120):
        t = i * 0.5
        events.append(ev("dns", t, pid=APP, comm="consul-client", qname="big.example.test", qtype="A",
                         server="127.0.0.1", answered=True, rcode="NOERROR", tc=True, latency_ns=10_000,
                         sport=30000 + i, id=i))
        events.append(ev("dns", t, pid=CACHE, comm="dnsmasq", qname="big.example.test", qtype="A",
                         server="10.53.0.2", answered=True, rcode="NOERROR", tc=True, latency_ns=200_000,
                         sport=50000 + i, id=i))
        events.append(ev("lookup", t, pid=APP, comm="consul-client", name="big.example.test", latency_ns=300_000,
                         source="gai", attempts=[], via={"pid": CACHE, "comm": "dnsmasq", "program": "dnsmasq",
                                                         "server": "127.0.0.1", "port": 53}))
    storms = [f for f in evaluate(events) if f.rule == "cache-miss-storm"]
    assert len(storms) == 1, [f.summary for f in storms]
    [storm] = storms
    assert storm.evidence["hops"] == {"app -> 127.0.0.1": 120, "cache -> 10.53.0.2": 120}
    assert storm.evidence["hop"] == "cache" and storm.pids == [CACHE]
    assert "the cache dnsmasq (pid 300) forwards it upstream to 10.53.0.2" in storm.summary
    assert "nothing between" not in storm.summary


def test_an_app_named_like_a_dns_server_is_not_a_cache():
    events = [ev("dns", i * 0.5, pid=APP, comm="consul-client", qname="svc.example.test", qtype="A",
                 server="10.53.0.2", answered=True, rcode="NOERROR", latency_ns=10_000, sport=30000 + i, id=i)
              for i in range(120)]
    [storm] = [f for f in evaluate(events) if f.rule == "cache-miss-storm"]
    assert storm.evidence["hop"] == "app" and "nothing between pid 4711 (consul-client)" in storm.summary


def test_wire_only_claims_of_an_unknown_resolver_say_so():
    events = []
    for i in range(4):
        t = i * 6
        events.append(ev("dns", t, qname="kafka.service", qtype="A", server="10.100.0.9", answered=False,
                         rcode=None, sport=40000 + i, id=i, nameservers=["10.100.0.9", "10.100.0.2"]))
        events.append(ev("lookup", t, name="kafka.service", latency_ns=5 * S + 2_000_000, error=None,
                         source="wire", resolver="unknown", waited_timeouts=True, attempts=[],
                         nameservers=["10.100.0.9", "10.100.0.2"]))
    findings = evaluate(events)
    timeout = [f for f in findings if f.rule == "timeout-multiple-latency"]
    assert timeout and timeout[0].confidence == "wire-only" and "wire alone" in timeout[0].summary


def test_no_latency_claim_from_timeouts_the_process_never_waited():
    events = []
    for i in range(6):
        t = i * 0.2
        events.append(ev("dns", t, pid=77, comm="muslresolve", qname="web.example.test", qtype="A",
                         server="10.53.0.9", answered=False, rcode=None, sport=5, id=i,
                         nameservers=["10.53.0.9", "10.53.0.2"]))
        events.append(ev("lookup", t, pid=77, comm="muslresolve", name="web.example.test", latency_ns=5 * S,
                         source="wire", resolver="musl", waited_timeouts=False, attempts=[],
                         nameservers=["10.53.0.9", "10.53.0.2"]))
    findings = [f for f in evaluate(events) if 77 in f.pids]
    assert "timeout-multiple-latency" not in {f.rule for f in findings}
    [dead] = [f for f in findings if f.rule == "dead-nameserver"]
    assert dead.severity == "info" and "did not wait" in dead.summary
