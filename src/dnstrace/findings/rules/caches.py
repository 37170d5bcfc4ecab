"""Cache rules: names asked far more often than their TTL allows (a cache-miss storm), and
slow or failing lookups through a cache on this node, blamed on the hop behind it.

Resolver chains: a lookup through a cache on this node carries ``via`` (the process
serving the nameserver address). ``local-cache-upstream`` names the app that waited and
the cache, and looks for the cause in the cache's own traffic; ``cache-miss-storm``
counts app -> cache and cache -> upstream as separate hops.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from dnstrace.findings.model import (
    DNS_PORTS,
    Event,
    Evidence,
    Finding,
    Rule,
    affected,
    container_of,
    dur,
    is_dns_server_comm,
    proc_label,
    process_name,
    top_process,
)
from dnstrace.findings.window import Window


def cache_miss_storm(w: Window, min_queries: int = 50) -> list[Finding]:
    """One name asked far more often than its TTL allows, per hop (app -> server, cache -> upstream)."""
    # Two passes: count every (name, type) cheaply, then gather the queries of the few asked
    # often enough to matter (a node asks tens of thousands of names once or twice a minute).
    floor = max(min_queries, 0.8 * w.window_s)  # below both thresholds whatever the TTL
    asked: defaultdict[tuple[str, Any], list[Event]] = defaultdict(list)
    if sum(w.facts().name_counts.values()) < floor:
        return []
    frequent = {key for key, n in w.facts().case_folded_counts().items() if n >= floor}
    if frequent:
        for q in w.queries():
            qname = q.get("qname")
            if qname and not q.get("retransmit") and q.get("proto", "udp") == "udp":
                key = (str(qname).lower(), q.get("qtype"))
                if key in frequent:
                    asked[key].append(q)
    findings: list[Finding] = []
    cache_pids = {via.get("pid") for via in w.caches_used().values()}
    for (qname, qtype), queries in asked.items():
        if len(queries) < floor:
            continue
        ttls = [int(q["ttl"]) for q in queries if q.get("ttl")]
        ttl = min(ttls) if ttls else None
        expected = (w.window_s / ttl + 1) if ttl else None
        if sum(1 for q in queries if q.get("rcode") == "NXDOMAIN") > 0.5 * len(queries):
            continue  # NXDOMAIN storms are the ndots rule's business
        # Each hop counted on its own: app -> server, cache -> its upstream (a chain is two hops).
        hops: defaultdict[tuple[bool, str], list[Event]] = defaultdict(list)
        for q in queries:
            from_cache = q.get("pid") in cache_pids or is_dns_server_comm(q.get("comm"))
            hops[(from_cache, str(q.get("server")))].append(q)
        counted = {f"{'cache' if c else 'app'} -> {srv}": len(qs) for (c, srv), qs in hops.items()}
        storming = [(key, qs) for key, qs in hops.items() if len(qs) >= min_queries
                    and (expected is None or len(qs) >= 4 * expected) and len(qs) / w.window_s >= 0.8]
        for (from_cache, server), hop_queries in storming:
            pids, comms, containers = affected(hop_queries)
            top = top_process(hop_queries)
            if not from_cache and (top["pid"], server) in w.caches_used():
                continue  # asked of a cache on this node: its own upstream hop is judged on its own
            who = proc_label(top["pid"], top["comm"], top["container"])
            rate = len(hop_queries) / w.window_s
            if from_cache:
                apps = sum(len(qs) for (c, _), qs in hops.items() if not c)
                why = (f"the cache {top['comm']} (pid {top['pid']}) forwards it upstream to {server} every time "
                       f"instead of answering from cache" + (f" (apps asked it {apps} times)" if apps else ""))
                head = f"{qname} ({qtype}) was asked upstream {len(hop_queries)} times"
            else:
                why = f"nothing between {who} and {server} caches it"
                head = f"{qname} ({qtype}) was asked {len(hop_queries)} times"
            summary = (f"{head} in {w.window_s:g} s ({rate:.1f}/s, hop {'cache' if from_cache else 'app'} -> "
                       f"{server}, mostly by {who})" + (f" although its TTL is {ttl} s" if ttl else "") + f": {why}")
            evidence = {"qname": qname, "qtype": qtype, "queries": len(hop_queries), "per_second": round(rate, 2),
                        "ttl": ttl, "servers": {server: len(hop_queries)}, "hop": "cache" if from_cache else "app",
                        "hops": counted, "truncated": sum(1 for q in hop_queries if q.get("tc"))}
            if from_cache:
                fix = (f"Make {top['comm']} cache the answer: look for answers it refuses to cache (truncated answers "
                       f"it retries over TCP, TTL 0 from the upstream, a cache size of 0) and raise its minimum TTL.")
            else:
                fix = ("Cache the answer: a node-local cache (nscd, systemd-resolved, NodeLocal DNSCache) or the "
                       "application's own.")
            finding_key = f"{qname}/{qtype}" if len(storming) == 1 else f"{qname}/{qtype}@{server}"
            findings.append(Finding("cache-miss-storm", "warning", summary, evidence, fix, key=finding_key,
                                    pids=pids, comms=comms, containers=containers))
    return findings


# How to make a cache use UDP upstream / where its upstream is configured, per program.
CACHE_UDP_HINT = {
    "unbound": "unbound.conf 'tcp-upstream: no'",
    "NodeLocal DNSCache": "Corefile 'forward . <upstream> { prefer_udp }' instead of force_tcp",
    "CoreDNS": "Corefile 'forward . <upstream> { prefer_udp }' instead of force_tcp",
    "dnsmasq": "drop the TCP-only upstream (dnsmasq uses UDP unless the answer is truncated)",
    "systemd-resolved": "resolved.conf DNSOverTLS=no / a reachable DNS=",
}
CACHE_UPSTREAM_CONFIG = {
    "unbound": "forward-addr in unbound.conf", "dnsmasq": "'server=' in dnsmasq.conf",
    "NodeLocal DNSCache": "the forward plugin of its Corefile", "CoreDNS": "the forward plugin of its Corefile",
    "systemd-resolved": "DNS= in resolved.conf", "BIND named": "forwarders in named.conf",
}


def _hop_cause(w: Window, cache: dict[str, Any], upstream: list[Event]) -> tuple[str, str, Evidence] | None:
    """What fails behind a node-local cache: (why, fix, evidence), from its own traffic in the window."""
    pid, comm, program = cache.get("pid"), cache.get("comm"), str(cache.get("program") or cache.get("comm"))
    mine = [e for e in w.kind("syn_retry") if (e.get("pid") == pid or (comm and e.get("comm") == comm))
            and e.get("dport") in DNS_PORTS]
    if mine:
        dests = Counter(f"{e.get('daddr')}:{e.get('dport')}" for e in mine)
        dest, _ = dests.most_common(1)[0]
        retries = sum(int(e.get("count") or 1) for e in mine)
        why = (f"{program}'s TCP connections to its upstream {dest} are not answered "
               f"({retries} SYN retransmits in {w.window_s:g} s)")
        fix = (f"Fix {program}'s upstream hop, not the app: {dest.rsplit(':', 1)[0]} drops TCP SYNs on port "
               f"{dest.rsplit(':', 1)[1]}; allow TCP/53 from the cache to it, or let {program} ask over UDP ("
               f"{CACHE_UDP_HINT.get(program, 'its upstream protocol setting')}).")
        return why, fix, {"upstream_syn_retransmits": retries, "upstream": dict(dests.most_common(5))}
    queries = list(upstream) + [q for q in w.queries() if q.get("pid") == pid]
    lost = Counter(q.get("server") for q in queries if q.get("answered") is False and q.get("server"))
    answered = Counter(q.get("server") for q in queries if q.get("answered") and q.get("server"))
    dead = [srv for srv, n in lost.most_common() if n >= 2 and not answered[srv]]
    if dead:
        why = f"{program}'s upstream {dead[0]} never answered {lost[dead[0]]} of its queries"
        fix = (f"Fix or replace the upstream {dead[0]} of {program} "
               f"({CACHE_UPSTREAM_CONFIG.get(program, 'its upstream setting')}).")
        return why, fix, {"upstream_unanswered": dict(lost.most_common(5))}
    failed = Counter(q.get("server") for q in queries if q.get("rcode") == "SERVFAIL")
    if failed:
        srv, n = failed.most_common(1)[0]
        why = f"{program}'s upstream {srv} answered SERVFAIL {n} times"
        fix = f"Find out why {srv} fails for these names (its own upstream, DNSSEC); {program} only relays it."
        return why, fix, {"upstream_servfail": dict(failed.most_common(5))}
    slow = [int(q["latency_ns"]) for q in queries if q.get("answered") and q.get("latency_ns")]
    if len(slow) >= 2 and statistics.median(slow) >= 300_000_000:
        why = f"{program}'s upstream answers take {dur(statistics.median(slow))}"
        fix = f"Find out why {program}'s upstream is slow, or give it a faster one."
        return why, fix, {"upstream_median_ns": statistics.median(slow)}
    return None


def local_cache_upstream(w: Window) -> list[Finding]:
    """Slow or failing lookups through a cache on this node, blamed on the hop behind it.

    Names the app that waited and the cache; the cause is looked for in the cache's own
    traffic (SYN retransmits to a DNS port, unanswered or failing upstream queries)."""
    groups: defaultdict[tuple[Any, Any, Any, Any], list[Event]] = defaultdict(list)
    for e in w.kind("lookup"):
        via = e.get("via")
        if isinstance(via, dict) and via.get("pid"):
            groups[(e.get("pid"), process_name(e), via.get("pid"), via.get("server"))].append(e)
    findings: list[Finding] = []
    for (pid, comm, cache_pid, server), lookups in groups.items():
        # Narrower than events.is_failed on purpose: NODATA (error NOERROR) is the cache answering
        # correctly, not the cache failing, so it does not count against the hop.
        bad = [e for e in lookups if e.get("error") not in (None, "", "NOERROR")
               or (e.get("latency_ns") or 0) >= 0.5e9]
        if len(bad) < 2:
            continue
        cache = lookups[-1]["via"]
        program = str(cache.get("program") or cache.get("comm"))
        upstream = [u for e in lookups for a in e.get("attempts") or () for u in a.get("upstream") or ()]
        cause = _hop_cause(w, cache, upstream)
        container = container_of(lookups)
        app = proc_label(pid, comm, container)
        hop = f"the local cache {program} (pid {cache_pid}, {cache.get('comm')}) on {server}"
        latencies = [int(e["latency_ns"]) for e in bad if e.get("latency_ns")]
        errors = Counter(e.get("error") for e in bad if e.get("error") not in (None, "", "NOERROR"))
        outcome = ", ".join(f"{err} x{n}" for err, n in errors.most_common(3))
        if latencies:
            outcome += ("; " if outcome else "") + f"median {dur(statistics.median(latencies))}"
        head = f"{len(bad)} of {len(lookups)} lookups by {app} through {hop} failed or were slow ({outcome})"
        evidence = {"app_pid": pid, "app_comm": comm, "cache": cache, "lookups": len(lookups),
                    "slow_or_failed": len(bad), "median_ns": statistics.median(latencies) if latencies else None,
                    "upstream_attempts": len(upstream),
                    "errors": dict(errors)}
        keep = f" Keep 'nameserver {server}': the cache itself is not the fault."
        if cause:
            why, fix, more = cause
            evidence.update(more)
            summary = f"{head}: {why}"
            severity = "critical" if len(bad) >= 0.5 * len(lookups) else "warning"
            confidence = "measured"
        else:
            summary = (f"{head}; nothing failing was seen on the cache's upstream side (its upstream may use "
                       f"ports or paths not traced)")
            fix = (f"Look at {program}'s upstream and logs ({CACHE_UPSTREAM_CONFIG.get(program, 'its config')}): "
                   f"the app waits on it.")
            severity = "warning"
            confidence = "wire"
        fix += keep
        findings.append(Finding("local-cache-upstream", severity, summary, evidence, fix,
                                key=f"{pid}/{cache_pid}/{server}", pids=[pid, cache_pid],
                                comms=[comm, cache.get("comm")], containers=[container] if container else [],
                                confidence=confidence))
    return findings


CACHE_MISS_STORM = Rule(cache_miss_storm, {
    "cache-miss-storm": "one name asked 50 times or more in the window on one hop (app -> server or cache -> "
                        "upstream), 4 times as often as its TTL allows: nothing on that hop caches it"})
LOCAL_CACHE_UPSTREAM = Rule(local_cache_upstream, {
    "local-cache-upstream": "lookups through a cache on this node fail or are slow: the fault is the cache's "
                            "upstream hop (named from its own traffic), not the cache"})
