"""One lookup's attempts as text: the waterfall in `top`'s detail pane and `dnstrace query --kind lookup`."""

from __future__ import annotations

import os
import subprocess

from dnstrace.cli.top.view import TopView
from dnstrace.waterfall import attempt_wait_ns, waterfall_lines
from support import DNSTRACE

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _dead_nameserver_lookup(pid: int = 4242, ts: int = T0) -> dict:
    """As the dead-nameserver lab records it: 10.53.0.9 never answers (1 s timeout), 10.53.0.2 answers."""
    return {"kind": "lookup", "ts": ts, "pid": pid, "tid": pid, "comm": "kafka-writer", "name": "web.example.test",
            "latency_ns": S + 700_000, "error": None, "source": "gai", "func": "getaddrinfo",
            "resolv_conf": {"nameservers": ["10.53.0.9", "10.53.0.2"], "timeout": 1.0, "attempts": 1},
            "attempts": [
                {"ts": ts + 50_000, "qname": "web.example.test", "qtype": "A", "server": "10.53.0.9", "dport": 53,
                 "proto": "udp", "sport": 41000, "answered": False, "latency_ns": None, "timeout_ns": S},
                {"ts": ts + S + 60_000, "qname": "web.example.test", "qtype": "A", "server": "10.53.0.2",
                 "dport": 53, "proto": "udp", "sport": 41001, "answered": True, "rcode": "NOERROR",
                 "latency_ns": 300_000, "tc": True, "ancount": 1, "answers": ["10.53.1.80"]},
                {"ts": ts + S + 400_000, "qname": "web.example.test", "qtype": "A", "server": "10.53.0.2",
                 "dport": 53, "proto": "tcp", "sport": 41002, "answered": True, "rcode": "NOERROR",
                 "latency_ns": 250_000, "tcp_fallback": True, "ancount": 1, "answers": ["10.53.1.80"]}]}


def test_waterfall_shows_the_timeout_then_the_answer_from_the_second_server():
    lines = waterfall_lines(_dead_nameserver_lookup())
    assert lines[0].startswith("web.example.test  1.00s  ok  (3 attempts, 2 servers, 1 timeout)")
    first, second, third = lines[1:]
    assert first.startswith("├─ +50.0µs") and "10.53.0.9:53" in first and "no answer, gave up after 1.00s" in first
    assert second.startswith("├─ +1.00s") and "10.53.0.2:53" in second and "NOERROR 300.0µs, truncated (TC)" in second
    assert "1 answer: 10.53.1.80" in second
    assert third.startswith("└─") and " tcp " in third and "(TCP retry after TC)" in third
    # The bars sit on the lookup's time line: the timeout fills it, the answers are at its end.
    bar = first.split("|")[1]
    assert bar.count("█") >= 18 and second.split("|")[1].rstrip().endswith("█") and second.split("|")[1][0] == " "


def test_unanswered_wait_falls_back_to_resolv_conf_then_lookup_end():
    lookup = _dead_nameserver_lookup()
    attempt = dict(lookup["attempts"][0], timeout_ns=None)
    assert attempt_wait_ns(attempt, lookup) == S
    assert attempt_wait_ns(attempt, dict(lookup, resolv_conf=None)) == S + 700_000 - 50_000


def test_tcp_attempt_shows_its_connect_and_syn_retransmits():
    lookup = _dead_nameserver_lookup()
    related = [{"kind": "connect", "ts": T0 + S + 390_000, "pid": 4242, "sport": 41002, "daddr": "10.53.0.2",
                "dport": 53, "result": "established", "latency_ns": 1_000_000_000, "retries": 1},
               {"kind": "syn_retry", "ts": T0 + S + 395_000, "pid": 4242, "sport": 41002, "daddr": "10.53.0.2",
                "dport": 53, "retry": 1, "elapsed_ns": 1_000_000_000},
               {"kind": "syn_retry", "ts": T0 + S + 395_000, "pid": 4242, "sport": 9999, "daddr": "10.53.0.2",
                "dport": 53, "retry": 1}]  # another connection: not this attempt's
    lines = waterfall_lines(lookup, related)
    assert len(lines) == 6
    assert "TCP connect established after 1.00s, 1 SYN retransmits" in lines[4]
    assert "SYN retransmit #1 to 10.53.0.2:53" in lines[5]


def test_lookup_without_wire_queries_says_so():
    lines = waterfall_lines(dict(_dead_nameserver_lookup(), attempts=[]))
    assert "no wire queries seen" in lines[-1]


def test_top_detail_pane_draws_the_waterfall():
    lookup = _dead_nameserver_lookup()
    view = TopView()
    view.detail_pid = 4242
    snap = {"details": {4242: {"comm": "kafka-writer", "nameservers": ["10.53.0.9", "10.53.0.2"],
                               "resolv_options": ["ndots:1", "timeout:1", "attempts:1"], "lookups": 3,
                               "servers": [], "slowest": [dict(lookup, second=1)]}},
            "servers": [], "findings": []}
    text = "\n".join(view.render_detail(snap, 120, 40))
    assert "slowest recent lookups:" in text
    assert "├─ +50.0µs" in text and "no answer, gave up after 1.00s" in text and "10.53.0.2:53" in text


def test_query_kind_lookup_prints_trees(tmp_path):
    """`dnstrace query --kind lookup --min-latency 1s` against a collector holding recorded lookups."""
    from dnstrace.collector.server import CollectorServer
    from dnstrace.collector.store.base import BatchKey
    from dnstrace.collector.store.from_url import open_store
    from dnstrace.wire.codec import decode_batch, encode_events

    store = open_store(f"duckdb:{tmp_path}/c.duckdb")
    fast = dict(_dead_nameserver_lookup(pid=7, ts=T0 + 5 * S), latency_ns=2_000_000, name="fast.example.test")
    events = [_dead_nameserver_lookup(ts=T0), fast,
              {"kind": "connect", "ts": T0 + S + 390_000, "pid": 4242, "tid": 4242, "comm": "kafka-writer",
               "sport": 41002, "daddr": "10.53.0.2", "dport": 53, "result": "established", "latency_ns": S,
               "retries": 1},
              {"kind": "syn_retry", "ts": T0 + S + 395_000, "pid": 4242, "tid": 4242, "comm": "kafka-writer",
               "sport": 41002, "daddr": "10.53.0.2", "dport": 53, "retry": 1, "elapsed_ns": S}]
    for e in events:
        e["host"] = "node-a"
    assert store.insert(BatchKey("node-a", "boot", 1, 1), decode_batch(encode_events(events)))
    sock = tmp_path / "q.sock"
    server = CollectorServer(store, f"unix:{sock}").start()
    try:
        env = dict(os.environ, DNSTRACE_CONFIG=os.devnull)
        result = subprocess.run(DNSTRACE + ["query", "--collector", f"unix:{sock}", "--since", "@1699999999",
                                            "--kind", "lookup", "--min-latency", "1s"],
                                capture_output=True, text=True, timeout=60, env=env)
    finally:
        server.stop()
        store.close()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "node-a pid 4242 (kafka-writer)" in lines[0] and "fast.example.test" not in result.stdout
    assert lines[1] == "  web.example.test  1.00s  ok  (3 attempts, 2 servers, 1 timeout)"
    assert lines[2].startswith("  ├─ +50.0µs") and "10.53.0.9:53" in lines[2] and "no answer" in lines[2]
    assert "10.53.0.2:53" in lines[3] and "NOERROR" in lines[3]
    assert any("SYN retransmit #1 to 10.53.0.2:53" in line for line in lines)
