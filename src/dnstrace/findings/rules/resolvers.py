"""Resolver rule: a process that resolves without libc (Go, c-ares, Java...), so resolv.conf
options may not apply to it."""

from __future__ import annotations

from collections import Counter

from dnstrace.findings.model import DNS_PORTS, Finding, Rule, container_of, is_dns_server_comm, proc_label
from dnstrace.findings.window import Window


def resolver_bypasses_libc(w: Window, min_queries: int = 3) -> list[Finding]:
    """A process that sends DNS queries without calling getaddrinfo (judged only when gai is traced)."""
    if not w.gai_traced:
        return []
    gai_pids = {e.get("pid") for e in w.kind("gai")}
    findings: list[Finding] = []
    for (pid, comm), queries in w.by_process("dns").items():
        if pid in gai_pids or is_dns_server_comm(comm) or len(queries) < min_queries:
            continue
        if any(q.get("sport") in DNS_PORTS for q in queries):
            continue  # a server's own traffic
        container = container_of(queries)
        summary = (f"{proc_label(pid, comm, container)} sent {len(queries)} DNS queries without calling "
                   f"getaddrinfo: it has its own resolver (Go, c-ares, Java...), which may ignore resolv.conf "
                   f"options such as single-request-reopen")
        evidence = {"queries": len(queries), "servers": sorted({str(q.get("server")) for q in queries})[:8],
                    "qnames": [n for n, _ in Counter(q.get("qname") for q in queries).most_common(5)]}
        fix = ("Check the resolver the program uses: gRPC c-ares -> GRPC_DNS_RESOLVER=native; Go -> "
               "GODEBUG=netdns=cgo to use libc; or configure its own timeouts and nameservers.")
        findings.append(Finding.of_process("resolver-bypasses-libc", "info", summary, evidence, fix,
                                           pid, comm, container))
    return findings


RESOLVER_BYPASSES_LIBC = Rule(resolver_bypasses_libc, {
    "resolver-bypasses-libc": "a process sent DNS queries without calling getaddrinfo: its own resolver may ignore "
                              "resolv.conf options"})
