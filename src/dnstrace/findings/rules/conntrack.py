"""Conntrack rules: new flows the table refused (insert_failed: an SNAT port collision, or one
query of a same-port A+AAAA pair losing the race), a table out of room, and the A/AAAA
race itself (seed 004).

What the kernel does decides which fires: since 5.x, conntrack resolves most clashes of
the classic A/AAAA race without loss (``clash_resolve`` rises), and the 5 s pattern comes
from SNAT port collisions, where *both* queries of a pair are lost.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from dnstrace.findings.model import DNS_PORTS, Event, Finding, Rule, affected, by_process, container_of, proc_label, top_process
from dnstrace.findings.window import Window, mark_unreliable, shown_options


def _same_port_groups(w: Window) -> tuple[list[Event], list[Event]]:
    """Unanswered DNS queries of A+AAAA pairs sent from one port: (one of the pair lost, both lost).

    The seed-004 race loses *one* query of the pair (its conntrack entry clashed with its
    partner's) while the other is answered. When both are lost, the port pair is not the
    cause: every new flow is refused (an SNAT port collision, a full table), and
    single-request-reopen would not help. Queries are grouped by (pid, source port, name).
    """
    groups: defaultdict[tuple[Any, Any, str], list[Event]] = defaultdict(list)
    flagged = {(q.get("pid"), q.get("sport"), str(q.get("qname") or "").lower()) for q in w.facts().same_port}
    if not flagged:
        return [], []
    flagged_pids = {key[0] for key in flagged}
    for q in w.queries():
        if q.get("pid") not in flagged_pids or q.get("qtype") not in ("A", "AAAA"):
            continue
        key = (q.get("pid"), q.get("sport"), str(q.get("qname") or "").lower())
        if key in flagged:
            groups[key].append(q)
    one_lost: list[Event] = []
    both_lost: list[Event] = []
    for key in flagged:
        queries = groups[key]
        lost = [q for q in queries if q.get("answered") is False]
        if not lost:
            continue
        answered_types = {q.get("qtype") for q in queries if q.get("answered") is not False}
        if answered_types - {q.get("qtype") for q in lost}:
            one_lost.extend(lost)
        elif not answered_types:
            both_lost.extend(lost)
    return one_lost, both_lost


def _same_port_losses(w: Window) -> list[Event]:
    """Queries lost as one half of a parallel A+AAAA pair on one port (the race's signature)."""
    return _same_port_groups(w)[0]


def _nat_collision_findings(w: Window, both_lost: list[Event], insert_failed: int, netns: list[str],
                            totals: dict[str, int]) -> list[Finding]:
    """Per process: both queries of its same-port pairs lost while conntrack refused inserts.

    Not the A/AAAA race (that loses one of the pair): whole new flows are refused, typically
    an SNAT rule with too few source ports; single-request-reopen would not help.
    """
    findings: list[Finding] = []
    for (pid, comm), lost in by_process(both_lost).items():
        container = container_of(lost)
        servers = Counter(str(q.get("server")) for q in lost)
        resolv = w.process_resolv(pid)
        timeout = float(resolv.timeout_s)
        slow = [lat for lat in w.slow_lookups_of(pid) if lat >= 0.8 * timeout * 1e9]
        pairs = len({(q.get("sport"), str(q.get("qname") or "").lower()) for q in lost})
        summary = (f"DNS queries by {proc_label(pid, comm, container)} to {servers.most_common(1)[0][0]} vanish: "
                   f"both the A and the AAAA query of {pairs} lookups were lost while conntrack refused "
                   f"{insert_failed} new entries (insert_failed" + (f" in netns {', '.join(netns)}" if netns else "")
                   + f") in {w.window_s:g} s, so the resolver waits its {timeout:g} s timeout"
                   + (f" ({len(slow)} lookups took ≥ {timeout:g} s)" if slow else "")
                   + ". Both halves of each pair are lost, so this is not the A/AAAA race: new flows collide "
                     "on their NAT mapping (an SNAT rule with too few source ports)")
        fix = ("Give the SNAT/MASQUERADE rule on the path to the DNS server a port range with random allocation "
               "(--random-fully) instead of a single port, or send DNS to the server without SNAT; "
               "single-request-reopen will not help, since every new flow collides.")
        evidence = {**totals, "netns": netns, "both_of_pair_lost": len(lost), "pairs": pairs,
                    "servers": dict(servers.most_common(5)), "resolv_options": shown_options(resolv)}
        severity, summary = mark_unreliable(w, len(lost), "critical", summary, evidence)
        findings.append(Finding.of_process("conntrack-insert-failed", severity, summary, evidence, fix,
                                           pid, comm, container, key=f"insert_failed/{pid}"))
    return findings


def conntrack(w: Window) -> list[Finding]:
    """Flows conntrack refused to insert (and DNS queries lost that way), and a table out of room (seed 004)."""
    totals = w.conntrack_totals()
    findings: list[Finding] = []
    insert_failed = totals.get("insert_failed", 0)
    clash = totals.get("clash_resolve", 0)
    netns = sorted({str(e.get("netns")) for e in w.kind("conntrack")
                    if e.get("insert_failed") or e.get("drop") or e.get("early_drop")})
    # A packet that conntrack/NAT refused to confirm is freed in nf_hook_slow (a firewall rule's
    # DROP shows up in the table's chain function instead): DNS queries lost that way, per process.
    refused = [e for e in w.kind("drop") if e.get("reason") == "NETFILTER_DROP" and e.get("location") == "nf_hook_slow"
               and e.get("dport") in DNS_PORTS and e.get("pid")]
    if refused:
        top = top_process(refused)
        pids, comms, containers = affected(refused)
        dests = Counter(f"{e.get('daddr')}:{e.get('dport')}" for e in refused)
        count = sum(int(e.get("count") or 1) for e in refused)
        summary = (f"{count} DNS queries by {proc_label(top['pid'], top['comm'], top['container'])} to "
                   f"{dests.most_common(1)[0][0]} were dropped by netfilter as they were sent (conntrack/NAT could "
                   f"not insert their entry) in {w.window_s:g} s: lookups fail or wait for the resolver timeout")
        evidence = {"dropped_queries": count, "destinations": dict(dests.most_common(5)),
                    "location": "nf_hook_slow", "source_ports": len({e.get("sport") for e in refused}), **totals}
        fix = ("Look for a NAT rule mapping many flows onto one tuple (SNAT to a single port) or a full table; "
               "use 'options single-request-reopen' for the A/AAAA race, MASQUERADE --random-fully for SNAT "
               "port collisions; gRPC's c-ares resolver needs GRPC_DNS_RESOLVER=native.")
        findings.append(Finding("conntrack-insert-failed", "critical", summary, evidence, fix,
                                key=f"refused/{top['pid']}", pids=pids, comms=comms, containers=containers))
    if insert_failed:
        losses, both_lost = _same_port_groups(w)
        if both_lost:
            findings += _nat_collision_findings(w, both_lost, insert_failed, netns, totals)
        if losses or not both_lost:
            pids, comms, containers = affected(losses or refused)
            summary = (f"conntrack refused {insert_failed} new entries (insert_failed) in {w.window_s:g} s"
                       + (f" in netns {', '.join(netns)}" if netns else "")
                       + f": the first packet of those flows was dropped ({clash} other clashes were resolved "
                         f"without loss)")
            if losses:
                summary += (f"; {len(losses)} DNS queries sent as A+AAAA on one port went unanswered "
                            f"(by {', '.join(comms[:3])})")
            evidence = {**totals, "netns": netns, "same_port_losses": len(losses)}
            fix = ("If DNS is affected: 'options single-request-reopen' (or use-vc) in resolv.conf so A and AAAA "
                   "leave from different ports; for gRPC's c-ares resolver set GRPC_DNS_RESOLVER=native. For SNAT "
                   "port collisions: enable random port allocation (iptables MASQUERADE --random-fully).")
            findings.append(Finding("conntrack-insert-failed", "critical" if losses else "warning", summary,
                                    evidence, fix, key="insert_failed", pids=pids, comms=comms,
                                    containers=containers))
    # The drop counter also counts packets lost to insert failures: only the excess means "no room".
    full_drops = max(0, totals.get("drop", 0) - insert_failed) + totals.get("early_drop", 0)
    nearly_full = [e for e in w.kind("conntrack") if e.get("count") and e.get("max")
                   and int(e["count"]) >= 0.9 * int(e["max"])]
    if full_drops or nearly_full:
        latest = nearly_full[-1] if nearly_full else None
        summary = (f"the conntrack table is full: {full_drops} packets dropped for lack of room in {w.window_s:g} s"
                   + (f" ({latest['count']}/{latest['max']} entries)" if latest else ""))
        evidence = {"drop": totals.get("drop", 0), "early_drop": totals.get("early_drop", 0),
                    "count": latest["count"] if latest else None, "max": latest["max"] if latest else None,
                    "netns": netns}
        fix = ("Raise net.netfilter.nf_conntrack_max (and the hash size), shorten timeouts of idle flows, and find "
               "the process opening connections in a storm (see syn-retransmits).")
        findings.append(Finding("conntrack-table-full", "critical", summary, evidence, fix, key="table-full"))
    return findings


def aaaa_same_port_race(w: Window) -> list[Finding]:
    """Seed 004: one query of a same-port A+AAAA pair lost (its conntrack entry lost the race).

    Kernels since 5.x resolve most of these clashes (clash_resolve rises instead of
    insert_failed, nothing is lost): on them this rule mostly stays quiet, and both-lost
    pairs are reported by ``conntrack-insert-failed`` as the NAT collision they are.
    """
    losses = _same_port_losses(w)
    totals = w.conntrack_totals()
    insert_failed = totals.get("insert_failed", 0)
    findings: list[Finding] = []
    for (pid, comm), lost in by_process(losses).items():
        if len(lost) < 2 and not (lost and insert_failed):
            continue
        resolv = w.process_resolv(pid)
        if resolv.single_request_reopen or resolv.single_request or resolv.use_vc:
            continue  # already configured: the pairs seen are something else
        bypass = w.gai_traced and not any(e.get("pid") == pid for e in w.kind("gai"))
        timeout = float(resolv.timeout_s)
        slow = [lat for lat in w.slow_lookups_of(pid) if lat >= 0.8 * timeout * 1e9]
        container = container_of(lost)
        ports = Counter(q.get("sport") for q in lost)
        summary = (f"{proc_label(pid, comm, container)} sends A and AAAA in parallel from one socket and "
                   f"{len(lost)} of those queries were never answered"
                   + (f" while conntrack refused {insert_failed} inserts" if insert_failed else "")
                   + f": the conntrack race drops one of the pair and the resolver waits its {timeout:g} s timeout"
                   + (f" ({len(slow)} lookups took ≥ {timeout:g} s)" if slow else ""))
        if bypass:
            summary += "; this process resolves without libc, so resolv.conf options may not help"
        evidence = {"lost_same_port_queries": len(lost), "qtypes": dict(Counter(q.get("qtype") for q in lost)),
                    "ports": [p for p, _ in ports.most_common(5)], "insert_failed": insert_failed,
                    "clash_resolve": totals.get("clash_resolve", 0),
                    "servers": sorted({str(q.get("server")) for q in lost}),
                    "resolv_options": shown_options(resolv), "bypasses_libc": bypass}
        fix = ("Add 'options single-request-reopen' to resolv.conf (Kubernetes: pod dnsConfig.options) so A and "
               "AAAA use different ports, or 'use-vc'; gRPC clients on c-ares need GRPC_DNS_RESOLVER=native to "
               "honour it.")
        severity, summary = mark_unreliable(w, len(lost), "critical", summary, evidence)
        findings.append(Finding.of_process("aaaa-same-port-race", severity, summary, evidence, fix,
                                           pid, comm, container))
    return findings


CONNTRACK = Rule(conntrack, {
    "conntrack-insert-failed": "conntrack refused new entries (insert_failed), so the first packet of those flows "
                               "was dropped: DNS queries lost to an SNAT port collision or the A/AAAA race (seed 004)",
    "conntrack-table-full": "the conntrack table is full: packets dropped for lack of room"})
AAAA_SAME_PORT_RACE = Rule(aaaa_same_port_race, {
    "aaaa-same-port-race": "one query of an A+AAAA pair sent in parallel from one port lost while its twin was "
                           "answered: the conntrack race, fixed by single-request-reopen (seed 004)"})
