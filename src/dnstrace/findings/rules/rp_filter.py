"""Reverse-path filter rules: packets dropped because the return route does not go out the
interface they came in on, or because that interface has no IPv4 address (then loose
rp_filter acts as strict)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from dnstrace.findings.model import Event, Finding, Rule, affected, proc_label, top_process
from dnstrace.findings.window import Window

_NO_ADDRESS_RE = re.compile(r"no (ipv4 )?address|without (an )?(ipv4 )?address|has no ipv4", re.IGNORECASE)


def rp_filter(w: Window) -> list[Finding]:
    """Packets dropped by reverse-path filtering, per interface; worse when it has no IPv4 address (seed 003)."""
    groups: defaultdict[str, list[Event]] = defaultdict(list)
    for e in w.kind("drop"):
        if "RPFILTER" in str(e.get("reason", "")).upper():
            groups[str(e.get("iif_name") or e.get("iif") or "?")].append(e)
    findings: list[Finding] = []
    for iface, drops in groups.items():
        count = sum(int(e.get("count") or 1) for e in drops)
        no_address = any(_NO_ADDRESS_RE.search(str(e.get("why") or "")) or e.get("iif_has_ipv4") is False
                         for e in drops)
        flows = Counter((e.get("saddr"), e.get("daddr")) for e in drops)
        (saddr, daddr), _ = flows.most_common(1)[0]
        syns_to = [e for e in w.kind("syn_retry") if e.get("daddr") in (saddr, daddr)]
        pids, comms, containers = affected(syns_to or drops)
        why = next((str(e["why"]) for e in drops if e.get("why")), "")
        summary = (f"{count} packets from {saddr} to {daddr} arriving on {iface} were dropped by reverse-path "
                   f"filtering in {w.window_s:g} s")
        if no_address:
            summary += (f": {iface} has no IPv4 address, so loose rp_filter acts as strict "
                        f"(the source check fails)")
        if syns_to:
            top = top_process(syns_to)
            summary += (f"; {proc_label(top['pid'], top['comm'], top['container'])} keeps retrying "
                        f"({len(syns_to)} SYN retransmits)")
        evidence = {"iif": iface, "drops": count, "flows": [f"{s} -> {d}: {n}" for (s, d), n in flows.most_common(5)],
                    "why": why, "return_dev": next((e.get("return_dev") for e in drops if e.get("return_dev")), None),
                    "syn_retransmits": len(syns_to)}
        if no_address:
            fix = (f"Give {iface} an IPv4 address, or set net.ipv4.conf.{iface}.rp_filter=0 (the effective value "
                   f"is max(conf.all, conf.{iface})); and stop clients reconnecting to {daddr} in a tight loop.")
            rule, severity = "rp-filter-no-address", "critical"
        else:
            fix = (f"The return route to {saddr} does not go out through {iface}: fix routing asymmetry, or relax "
                   f"rp_filter on {iface} (net.ipv4.conf.{iface}.rp_filter=2, effective max(all, dev)).")
            rule, severity = "rp-filter-drops", "warning"
        findings.append(Finding(rule, severity, summary, evidence, fix, key=iface,
                                pids=pids, comms=comms, containers=containers))
    return findings


RP_FILTER = Rule(rp_filter, {
    "rp-filter-no-address": "packets dropped by reverse-path filtering on an interface without an IPv4 address, "
                            "where loose rp_filter acts as strict (seed 003)",
    "rp-filter-drops": "packets dropped by reverse-path filtering: the return route to their source leaves by "
                       "another interface"})
