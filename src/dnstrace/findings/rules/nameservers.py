"""Nameserver rules: one that never answers, one that answers slowly, and lookups that wait
whole multiples of the resolver timeout because queries are lost.

``dead-nameserver`` judges "never answered" per (server, process): the same address may be
another server in another network namespace. It leaves a cache on this node alone (a
working local cache is never the thing to remove: ``local-cache-upstream`` looks behind
it), and claims "take N s" only from lookups that waited for a timeout (musl asks every
server at once and waits for none).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from dnstrace.enrich.resolver_models import model_from_wire
from dnstrace.findings.model import (
    WIRE_ONLY_NOTE,
    Event,
    Finding,
    Rule,
    affected,
    confidence_of,
    container_of,
    dur,
    proc_label,
    resolv_path,
    top_process,
    waited,
)
from dnstrace.findings.window import Window, mark_unreliable, shown_options

ORDINALS = ("first", "second", "third", "fourth")


def dead_nameserver(w: Window) -> list[Finding]:
    """A nameserver that never answered two or more of a process's queries (seed 000)."""
    # Per (server, process): the same address may be a different server in another network
    # namespace, so "never answered" is judged for the queries of each process.
    # Unanswered queries are few: find them first, then look only at those processes' answers.
    sent: defaultdict[tuple[Any, Any], list[Event]] = defaultdict(list)
    for q in w.facts().unanswered:
        sent[(q["server"], q.get("pid"))].append(q)
    if not sent:
        return []
    answered_for: defaultdict[Any, Counter[Any]] = defaultdict(Counter)
    suspects = {pid for (_, pid), lost in sent.items() if len(lost) >= 2}
    for (pid, _comm), queries in w.queries_by_process().items():
        if pid in suspects:
            counter = answered_for[pid]
            for q in queries:
                if q.get("server") and q.get("answered") is not False and (q.get("answered") or q.get("rcode")):
                    counter[q["server"]] += 1
    findings: list[Finding] = []
    caches = w.caches_used()
    for (server, pid), lost in sent.items():
        answered = answered_for[pid]
        if len(lost) < 2 or answered[server]:
            continue
        if (pid, server) in caches:
            continue  # a cache on this node: local-cache-upstream looks behind it
        top = top_process(lost)
        resolv = w.process_resolv(top["pid"])
        nameservers = list(resolv.nameservers)
        position = nameservers.index(server) if server in nameservers else None
        others_answered = [ns for ns in nameservers if ns != server and answered[ns]]
        other_servers = sorted(s for s in answered if s != server)
        pids, comms, containers = affected(lost)
        lookups = w.lookups_of(top["pid"])
        resolver = w.resolver_of(top["pid"])
        if lookups:
            # Only lookups that sat through a timeout support a latency claim (musl waits for none).
            sat_through = [e for e in lookups if waited(e)]
            latencies = sorted(int(e["latency_ns"]) for e in lookups if e.get("latency_ns"))
            slow = sorted(int(e["latency_ns"]) for e in sat_through if (e.get("latency_ns") or 0) >= 0.5e9)
            did_not_wait = not sat_through
            confidence = confidence_of(lookups)
        else:  # no lookup events (yet): gai calls if any, and what its queries show
            sat_through = []
            latencies = w.slow_lookups_of(top["pid"])
            slow = [lat for lat in latencies if lat >= 0.5e9]
            own = next((qs for (p, _), qs in w.queries_by_process().items() if p == top["pid"]), [])
            parallel = model_from_wire(list(own))  # musl's signature: one question to every server at once
            did_not_wait = parallel is not None
            resolver = parallel.name if parallel is not None else resolver
            confidence = "measured" if w.kind("gai") and latencies else ("wire" if resolver else "wire-only")
        who = proc_label(top["pid"], top["comm"], top["container"])
        head = f"lookups by {who}"
        if did_not_wait:
            head = f"{who} did not wait for it"
            if resolver == "musl":
                head += " (musl asks every nameserver at once; the first answer wins)"
            if latencies:
                head += f", its lookups take {dur(statistics.median(latencies))}"
        else:
            head += f" take {dur(statistics.median(slow))}" if slow else " wait for timeouts"
        where = f" ({ORDINALS[position]} in its resolv.conf)" if position is not None and position < 4 else ""
        summary = f"{head}: nameserver {server}{where} never answered {len(lost)} queries"
        if others_answered:
            summary += f"; {others_answered[0]} answered"
        elif other_servers:
            summary += f"; {other_servers[0]} answered"
        summary += f". Remove or fix nameserver {server}."
        if confidence == "wire-only":
            summary += WIRE_ONLY_NOTE
        timeout = float(resolv.timeout_s)
        evidence = {
            "server": server, "unanswered": len(lost), "answered_by_server": 0,
            "other_servers_answered": {s: answered[s] for s in other_servers[:8]},
            "resolv_conf": resolv_path(top["pid"]), "resolv_conf_line": f"nameserver {server}",
            "nameservers": nameservers, "position": position, "timeout_s": timeout,
            "qnames": [n for n, _ in Counter(q.get("qname") for q in lost).most_common(5)],
            "lookup_latency_ns": {"median": statistics.median(slow) if slow else None,
                                  "max": max(latencies) if latencies else None},
        }
        fix = (f"Remove or replace 'nameserver {server}' in the resolv.conf this process sees "
               f"({resolv_path(top['pid'])}); for containers fix the DNS settings the runtime writes "
               f"(Docker --dns, Nomad network.dns, Kubernetes dnsPolicy/dnsConfig)."
               + (" Meanwhile 'options timeout:1' caps the wait at 1 s per attempt." if timeout > 1 else ""))
        evidence["resolver"] = resolver
        evidence["lookups_waited"] = len(sat_through) if lookups else None
        severity = "info" if did_not_wait else "critical" if position == 0 else "warning"
        severity, summary = mark_unreliable(w, len(lost), severity, summary, evidence)
        findings.append(Finding("dead-nameserver", severity, summary, evidence, fix, key=f"{server}/{pid}",
                                pids=pids, comms=comms, containers=containers, confidence=confidence))
    return findings


def slow_nameserver(w: Window, threshold_ns: int = 300_000_000) -> list[Finding]:
    # Latencies (numbers) per server first; the queries only for the rare server that is slow.
    latencies = w.facts().server_latencies
    findings: list[Finding] = []
    for server, values in latencies.items():
        if len(values) < 3:
            continue
        median = statistics.median(int(v) for v in values)
        if median < threshold_ns:
            continue
        answers = [q for q in w.queries() if q.get("server") == server and q.get("answered") is not False
                   and q.get("latency_ns") is not None and q.get("proto", "udp") == "udp"]
        pids, comms, containers = affected(answers)
        top = top_process(answers)
        summary = (f"nameserver {server} answers slowly: median {dur(median)} over {len(answers)} answers "
                   f"(queries by {proc_label(top['pid'], top['comm'], top['container'])} and others)")
        evidence = {"server": server, "answers": len(answers), "median_ns": median,
                    "max_ns": max(int(q["latency_ns"]) for q in answers)}
        fix = (f"Find out why {server} is slow (overloaded, slow upstream, packet loss on the way); "
               f"list a faster nameserver first or run a node-local cache.")
        findings.append(Finding("slow-nameserver", "warning", summary, evidence, fix, key=server,
                                pids=pids, comms=comms, containers=containers))
    return findings


def timeout_multiple_latency(w: Window) -> list[Finding]:
    """Lookups of one process that take whole multiples of its resolver timeout: queries lost, retried late."""
    findings: list[Finding] = []
    # No timeout is under 1 s: processes without a lookup of 0.8 s or more cannot match.
    candidates = {e.get("pid") for e in w.lookups() if (e.get("latency_ns") or 0) >= 0.8e9}
    for (pid, comm), lookups in w.by_process("lookup" if w.kind("lookup") else "gai").items():
        if pid not in candidates:
            continue
        resolv = w.process_resolv(pid)
        timeout_ns = float(resolv.timeout_s) * 1e9
        slow = [e for e in lookups if (e.get("latency_ns") or 0) >= 0.8 * timeout_ns and waited(e)]
        if len(slow) < 2:
            continue
        tolerance = max(0.15 * timeout_ns, 0.25e9)
        multiples = []
        for e in slow:
            k = round(e["latency_ns"] / timeout_ns)
            if k >= 1 and abs(e["latency_ns"] - k * timeout_ns) <= tolerance:
                multiples.append((k, e))
        if len(multiples) < 2 or len(multiples) < 0.6 * len(slow):
            continue
        ks = Counter(k for k, _ in multiples)
        shown = ", ".join(f"{k * timeout_ns / 1e9:g} s x{n}" for k, n in sorted(ks.items()))
        container = container_of(lookups)
        summary = (f"{len(multiples)} of {len(lookups)} lookups by {proc_label(pid, comm, container)} took whole "
                   f"multiples of its {timeout_ns / 1e9:g} s resolver timeout ({shown}): queries are lost and "
                   f"retried only after the timeout")
        evidence = {"timeout_s": timeout_ns / 1e9, "lookups": len(lookups), "at_timeout_multiples": len(multiples),
                    "multiples": dict(sorted(ks.items())),
                    "names": [n for n, _ in Counter(e.get("name") for _, e in multiples).most_common(5)],
                    "resolv_options": shown_options(resolv), "nameservers": list(resolv.nameservers)}
        fix = ("See the other findings for which query is lost (dead nameserver, conntrack race, dropped SYNs); "
               "until fixed, 'options timeout:1 attempts:2' in resolv.conf shortens each wait.")
        severity = "warning"
        # Lookups grouped from the wire (no libc call measured) end where their last answer was
        # seen: with DNS records lost by the agent, a "timeout" may be an answer it missed.
        from_wire = sum(1 for _, e in multiples if e.get("source") == "wire")
        confidence = confidence_of([e for _, e in multiples])
        if confidence == "wire-only":
            summary += WIRE_ONLY_NOTE
        if from_wire:
            severity, summary = mark_unreliable(w, from_wire, severity, summary, evidence)
        finding = Finding.of_process("timeout-multiple-latency", severity, summary, evidence, fix,
                                     pid, comm, container)
        finding.confidence = confidence
        findings.append(finding)
    return findings


DEAD_NAMESERVER = Rule(dead_nameserver, {
    "dead-nameserver": "a nameserver never answered two or more of a process's queries, and answered none: "
                       "which one, its place in the resolv.conf the process sees, how long lookups wait (seed 000)"})
SLOW_NAMESERVER = Rule(slow_nameserver, {
    "slow-nameserver": "a nameserver's median answer over UDP takes 300 ms or more (three answers or more)"})
TIMEOUT_MULTIPLE_LATENCY = Rule(timeout_multiple_latency, {
    "timeout-multiple-latency": "a process's lookups take whole multiples of its resolver timeout: queries are "
                                "lost and retried only after the timeout"})
