"""Truncation rules: answers too big for one UDP datagram, asked for again and again, and the
TCP retries each of them costs."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from dnstrace.findings.model import (
    Event,
    Finding,
    Rule,
    affected,
    by_process,
    container_of,
    dur,
    is_dns_server_comm,
    proc_label,
    top_process,
)
from dnstrace.findings.window import Window


def truncated_not_cached(w: Window, min_repeats: int = 5) -> list[Finding]:
    """The same name truncated (TC) again and again by one server: nothing caches it (seed 001)."""
    truncated: defaultdict[tuple[Any, Any], list[Event]] = defaultdict(list)
    for q in w.facts().truncated:
        truncated[(q.get("qname"), q.get("server"))].append(q)
    findings: list[Finding] = []
    fallbacks_by_name = Counter(q.get("qname") for q in w.facts().fallbacks if q.get("tcp_fallback"))
    for (qname, server), answers in truncated.items():
        if len(answers) < min_repeats:
            continue
        fallbacks = fallbacks_by_name.get(qname, 0)
        pids, comms, containers = affected(answers)
        top = top_process(answers)
        asker = proc_label(top["pid"], top["comm"], top["container"])
        if is_dns_server_comm(top["comm"]):
            why = (f"{top['comm']} does not cache truncated answers, so every lookup of the name goes "
                   f"upstream again")
        else:
            why = "nothing caches the truncated answer, so every lookup goes to the server again"
        summary = (f"{len(answers)} truncated (TC) answers for {qname} from {server} in {w.window_s:g} s, "
                   f"asked by {asker}: {why} (and {fallbacks} retries over TCP)")
        evidence = {"qname": qname, "server": server, "tc_answers": len(answers), "tcp_fallbacks": fallbacks,
                    "per_second": round(len(answers) / w.window_s, 2)}
        fix = (f"Make the answer for {qname} fit in one UDP datagram: return fewer records (Consul: "
               f"dns_config.a_record_limit / enable_truncate=false), or allow larger EDNS0 answers "
               f"(resolv.conf 'options edns0', dnsmasq --edns-packet-max); a cache that stores TCP "
               f"answers (unbound, CoreDNS) avoids the upstream storm.")
        findings.append(Finding("truncated-not-cached", "warning", summary, evidence, fix,
                                key=f"{qname}@{server}", pids=pids, comms=comms, containers=containers))
    return findings


def tcp_fallback(w: Window, min_fallbacks: int = 5) -> list[Finding]:
    """A process that keeps retrying over TCP after truncated UDP answers."""
    findings: list[Finding] = []
    fallbacks = w.facts().fallbacks
    for (pid, comm), items in by_process(fallbacks).items():
        if len(items) < min_fallbacks:
            continue
        servers: Counter[Any] = Counter(q.get("server") for q in items)
        latencies = [int(q["latency_ns"]) for q in items if q.get("latency_ns")]
        container = container_of(items)
        summary = (f"{proc_label(pid, comm, container)} fell back to TCP {len(items)} times in {w.window_s:g} s "
                   f"after truncated UDP answers from {', '.join(s for s, _ in servers.most_common(3))}"
                   + (f" (TCP answers take {dur(statistics.median(latencies))})" if latencies else ""))
        evidence = {"tcp_fallbacks": len(items), "servers": dict(servers.most_common(8)),
                    "qnames": [n for n, _ in Counter(q.get("qname") for q in items).most_common(5)]}
        fix = ("Keep answers under the UDP size (fewer records, EDNS0) or cache them: each fallback costs a TCP "
               "handshake and a second round trip.")
        findings.append(Finding.of_process("tcp-fallback", "info", summary, evidence, fix, pid, comm, container))
    return findings


TRUNCATED_NOT_CACHED = Rule(truncated_not_cached, {
    "truncated-not-cached": "one name's answer from one server truncated (TC) five times or more in the window: "
                            "nothing caches it, so every lookup goes to the server again (seed 001)"})
TCP_FALLBACK = Rule(tcp_fallback, {
    "tcp-fallback": "a process fell back to TCP five times or more after truncated UDP answers"})
