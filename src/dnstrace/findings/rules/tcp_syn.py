"""TCP rule: SYNs retransmitted to a destination that does not answer, with the connects' outcome.

When the destination is a DNS port, the summary says lookups over TCP wait for it, and
when the retrying process is a cache on this node, it names the apps waiting behind it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from dnstrace.findings.model import DNS_PORTS, Event, Finding, Rule, affected, dur, proc_label, process_name, top_process
from dnstrace.findings.window import Window


def syn_retransmits(w: Window, min_retries: int = 3) -> list[Finding]:
    """Connection attempts to one destination that are not answered (seed 002: a DNS server over TCP)."""
    by_dest: defaultdict[tuple[Any, Any], list[Event]] = defaultdict(list)
    for e in w.kind("syn_retry"):
        by_dest[(e.get("daddr"), e.get("dport"))].append(e)
    connects: defaultdict[tuple[Any, Any], list[Event]] = defaultdict(list)
    for e in w.kind("connect"):
        connects[(e.get("daddr"), e.get("dport"))].append(e)
    findings: list[Finding] = []
    for (daddr, dport), retries in by_dest.items():
        if len(retries) < min_retries:
            continue
        pids, comms, containers = affected(retries)
        top = top_process(retries)
        who = proc_label(top["pid"], top["comm"], top["container"]) if top["pid"] else "processes on this node"
        outcomes = Counter(c.get("result") for c in connects[(daddr, dport)])
        latencies = [int(c["latency_ns"]) for c in connects[(daddr, dport)] if c.get("latency_ns")]
        is_dns = dport in DNS_PORTS
        summary = f"{who} retransmitted {len(retries)} SYNs to {daddr}:{dport} in {w.window_s:g} s"
        waiting_apps = sorted({(e.get("pid"), process_name(e)) for e in w.kind("lookup")
                               if isinstance(e.get("via"), dict) and e["via"].get("pid") == top["pid"]}) \
            if is_dns and top["pid"] else []
        if is_dns:
            summary += " (a DNS server over TCP): lookups over TCP wait for the connection"
            if waiting_apps:  # the retrying process is a node-local cache: name who waits behind it
                summary += ("; it is the local cache of " +
                            ", ".join(proc_label(pid, comm) for pid, comm in waiting_apps[:3]))
                pids = pids + [pid for pid, _ in waiting_apps if pid not in pids][:3]
        else:
            summary += ": the destination does not answer connection attempts"
        if latencies:
            summary += f"; connects took up to {dur(max(latencies))}"
        if outcomes:
            summary += " (" + ", ".join(f"{n} {r}" for r, n in outcomes.most_common()) + ")"
        evidence = {"daddr": daddr, "dport": dport, "syn_retransmits": len(retries),
                    "max_retry": max(int(e.get("retry") or 0) for e in retries),
                    "connect_results": dict(outcomes), "per_second": round(len(retries) / w.window_s, 2)}
        if is_dns:
            fix = (f"The DNS server {daddr} drops or rate-limits TCP: fix its TCP limits/firewall, or stop forcing "
                   f"TCP (NodeLocal DNSCache: prefer_udp instead of force_tcp; remove 'options use-vc').")
        else:
            fix = (f"Check that {daddr}:{dport} still exists and accepts connections (a deleted pod IP? a firewall "
                   f"dropping SYNs?); make clients back off instead of reconnecting in a tight loop.")
        severity = "critical" if len(retries) >= 20 else "warning"
        findings.append(Finding("syn-retransmits", severity, summary, evidence, fix, key=f"{daddr}:{dport}",
                                pids=pids, comms=comms, containers=containers))
    return findings


SYN_RETRANSMITS = Rule(syn_retransmits, {
    "syn-retransmits": "three or more SYN retransmits to one destination: it does not answer connection attempts "
                       "(a DNS server over TCP: lookups wait for it; seed 002)"})
