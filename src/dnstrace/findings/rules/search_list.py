"""Search-list rule: names with fewer dots than ``ndots`` tried with every search domain
first, each try an NXDOMAIN (Kubernetes' ndots:5)."""

from __future__ import annotations

from collections import Counter

from dnstrace.enrich.resolvconf import ResolvConf
from dnstrace.findings.model import Finding, Rule, container_of, proc_label
from dnstrace.findings.window import Window


def ndots_nxdomain_storm(w: Window, min_nxdomain: int = 10) -> list[Finding]:
    """Most of a process's queries get NXDOMAIN for its names with a search domain appended."""
    findings: list[Finding] = []
    nx_per_pid = Counter(q.get("pid") for q in w.facts().nxdomain)
    for (pid, comm), all_queries in w.queries_by_process().items():
        if nx_per_pid.get(pid, 0) < min_nxdomain:
            continue
        nx = [q for q in all_queries if q.get("rcode") == "NXDOMAIN" and q.get("qname")]
        if len(nx) < min_nxdomain:
            continue
        queries = [q for q in all_queries if q.get("answered") is not False]
        if len(nx) < min_nxdomain or len(nx) < 0.5 * len(queries):
            continue
        # the resolv.conf the first query went out under (else the process's latest)
        resolv = ResolvConf.of_event(queries[0]) or w.process_resolv(pid)
        search = [s.rstrip(".").lower() for s in resolv.search]
        answered_names = {str(q["qname"]).rstrip(".").lower() for q in queries
                          if q.get("rcode") == "NOERROR" and q.get("qname")}
        expansions = []
        for q in nx:
            name = str(q["qname"]).rstrip(".").lower()
            by_search = any(name.endswith("." + s) for s in search)
            by_base = any(name.startswith(base + ".") for base in answered_names)
            if by_search or by_base:
                expansions.append(name)
        if len(expansions) < min_nxdomain or len(expansions) < 0.5 * len(nx):
            continue
        container = container_of(queries)
        ndots = str(resolv.ndots)
        examples = [n for n, _ in Counter(expansions).most_common(3)]
        summary = (f"{len(expansions)} of {len(queries)} queries by {proc_label(pid, comm, container)} in "
                   f"{w.window_s:g} s got NXDOMAIN from search-list expansion (e.g. {examples[0]}): names with "
                   f"fewer than ndots:{ndots} dots are tried with every search domain first")
        evidence = {"nxdomain_expansions": len(expansions), "queries": len(queries), "examples": examples,
                    "search": search, "ndots": ndots,
                    "servers": sorted({str(q.get("server")) for q in nx if q.get("server")})[:8]}
        fix = ("Use fully-qualified names with a trailing dot (e.g. 'api.example.com.'), or lower ndots "
               "('options ndots:1'; Kubernetes: pod dnsConfig.options ndots) or trim the search list.")
        findings.append(Finding.of_process("ndots-nxdomain-storm", "warning", summary, evidence, fix,
                                           pid, comm, container))
    return findings


NDOTS_NXDOMAIN_STORM = Rule(ndots_nxdomain_storm, {
    "ndots-nxdomain-storm": "most of a process's queries got NXDOMAIN from search-list expansion: names with fewer "
                            "dots than ndots are tried with every search domain first"})
