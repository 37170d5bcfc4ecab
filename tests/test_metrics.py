"""/metrics scraped over HTTP and parsed with prometheus-client's parser; label cardinality stays bounded."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from dnstrace.sinks.metrics import LABEL_LIMITS, MetricsSink, make_sink

S = 1_000_000_000


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_series_and_bounded_cardinality():
    sink = MetricsSink("127.0.0.1:0")
    try:
        sink.handle([
            {"kind": "gai", "pid": 1, "comm": "curl", "container": "", "latency_ns": 2 * S, "error": None},
            {"kind": "gai", "pid": 1, "comm": "curl", "container": "", "latency_ns": 1000, "error": "EAI_AGAIN"},
            {"kind": "dns", "pid": 1, "comm": "curl", "container": "", "server": "10.0.0.9", "answered": False},
            {"kind": "dns", "pid": 1, "comm": "curl", "container": "c1", "server": "10.0.0.2", "answered": True,
             "rcode": "NOERROR", "tc": True, "latency_ns": 3_000_000, "qname": "a.example"},
            {"kind": "syn_retry", "pid": 2, "comm": "grpc", "container": "", "daddr": "10.1.1.1", "dport": 443},
            {"kind": "drop", "pid": 0, "comm": "", "reason": "IP_RPFILTER", "count": 4},
            {"kind": "conntrack", "pid": 0, "netns": "4026531840", "insert_failed": 3, "count": 10, "max": 100},
        ])
        sink.set_findings([{"rule": "dead-nameserver", "severity": "critical"}])
        families = scrape(sink.port)
        lookups = families["dnstrace_lookup_duration_seconds"]
        count = [s for s in lookups.samples if s.name.endswith("_count") and s.labels["comm"] == "curl"]
        assert count and count[0].value == 2
        unanswered = families["dnstrace_dns_unanswered"].samples
        assert any(s.labels["server"] == "10.0.0.9" and s.value == 1 for s in unanswered if s.name.endswith("_total"))
        assert any(s.labels == {"server": "10.0.0.2"} for s in families["dnstrace_dns_truncated"].samples)
        assert any(s.labels["destination"] == "10.1.1.1:443" for s in families["dnstrace_tcp_syn_retransmits"].samples)
        assert any(s.labels["reason"] == "IP_RPFILTER" and s.value == 4
                   for s in families["dnstrace_packet_drops"].samples if s.name.endswith("_total"))
        assert any(s.labels["counter"] == "insert_failed" and s.value == 3
                   for s in families["dnstrace_conntrack_events"].samples if s.name.endswith("_total"))
        assert families["dnstrace_findings_active"].samples[0].labels["rule"] == "dead-nameserver"

        # A flood: 50k distinct names, 5k processes, 2k servers, 300 containers.
        flood = [{"kind": "dns", "pid": 100 + i, "comm": f"worker{i % 5000}", "container": f"c{i % 300}",
                  "server": f"10.{i % 2000 // 250}.{i % 250}.1", "answered": True, "rcode": "NOERROR",
                  "latency_ns": 1000, "qname": f"n{i}.example"} for i in range(50_000)]
        sink.handle(flood)
        families = scrape(sink.port)
        queries = [s for s in families["dnstrace_dns_queries"].samples if s.name.endswith("_total")]
        comms = {s.labels["comm"] for s in queries}
        servers = {s.labels["server"] for s in queries}
        containers = {s.labels["container"] for s in queries}
        assert len(comms) <= LABEL_LIMITS["comm"] + 1 and "other" in comms
        assert len(servers) <= LABEL_LIMITS["server"] + 1 and "other" in servers
        assert len(containers) <= LABEL_LIMITS["container"] + 1
        assert sum(s.value for s in queries) == 50_002  # 2 + 50k: folded into "other", not lost
        assert not any("n1.example" in str(s.labels) for f in families.values() for s in f.samples)
        overflow = {s.labels["label"]: s.value for s in families["dnstrace_metrics_label_overflow"].samples
                    if s.name.endswith("_total")}
        assert overflow["comm"] > 0 and overflow["server"] > 0
        total_series = sum(len(f.samples) for f in families.values())
        assert total_series < 20_000
    finally:
        sink.close()


def test_make_sink_is_off_without_address_and_rejects_bad_address():
    import pytest

    from dnstrace.errors import UsageError

    assert make_sink({"agent.metrics_addr": ""}) is None
    with pytest.raises(UsageError):
        make_sink({"agent.metrics_addr": "nonsense"})


def test_agent_losses_are_counters_by_source_and_counter():
    sink = MetricsSink("127.0.0.1:0")
    try:
        sink.handle([
            {"kind": "agent", "ts": 1, "pid": 1, "comm": "dnstrace", "source": "dns",
             "losses": {"ringbuf_lost": 40, "pairs_lost": 2}, "lost": 42, "dns_lost": 42},
            {"kind": "agent", "ts": 2, "pid": 1, "comm": "dnstrace", "source": "dns",
             "losses": {"ringbuf_lost": 5}, "lost": 5, "dns_lost": 5},
            {"kind": "agent", "ts": 2, "pid": 1, "comm": "dnstrace", "source": "tcp",
             "losses": {"sampled_out": 7}, "lost": 7, "dns_lost": 0},
        ])
        families = scrape(sink.port)
        lost = {(s.labels["source"], s.labels["counter"]): s.value
                for s in families["dnstrace_agent_lost_records"].samples if s.name.endswith("_total")}
        assert lost == {("dns", "ringbuf_lost"): 45, ("dns", "pairs_lost"): 2, ("tcp", "sampled_out"): 7}
    finally:
        sink.close()


def test_query_glibc_resends_to_the_next_nameserver_counts_for_that_server():
    # glibc re-sends the same id to the next nameserver: the wire parser marks it `retransmit`,
    # but it is that server's query and its answer (seen: 10.53.0.2 had no answers counted).
    sink = MetricsSink("127.0.0.1:0")
    try:
        sink.handle([
            {"kind": "dns", "pid": 7, "comm": "app", "container": "", "server": "10.53.0.9", "answered": False,
             "id": 4711, "qname": "web.example"},
            {"kind": "dns", "pid": 7, "comm": "app", "container": "", "server": "10.53.0.2", "answered": True,
             "rcode": "NOERROR", "latency_ns": 400_000, "id": 4711, "qname": "web.example", "retransmit": True},
        ])
        families = scrape(sink.port)
        queries = {s.labels["server"]: s.value for s in families["dnstrace_dns_queries"].samples
                   if s.name.endswith("_total")}
        assert queries == {"10.53.0.9": 1, "10.53.0.2": 1}
        rcodes = [(s.labels["server"], s.labels["rcode"], s.value) for s in families["dnstrace_dns_answers"].samples
                  if s.name.endswith("_total")]
        assert rcodes == [("10.53.0.2", "NOERROR", 1)]
    finally:
        sink.close()
