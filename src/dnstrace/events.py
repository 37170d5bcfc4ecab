"""The event vocabulary: every event is a flat dict with a ``kind`` and these fields.

Events travel as plain dicts from the loaders through enrichment, aggregation, the
spool and the collector; this module is the one place that says which kinds exist
and what their fields mean. New kinds need no schema surgery downstream: the
collector stores the common fields as columns and the rest as attributes.
"""

from __future__ import annotations

# Present on every event (enrichment fills the last three; empty for host processes).
COMMON_FIELDS = ("kind", "ts", "host", "pid", "tid", "comm", "container", "pod", "namespace")

# kind -> (field, meaning). ``ts`` is unix time in ns, latencies are ns.
KINDS: dict[str, dict[str, str]] = {
    "gai": {
        "func": "getaddrinfo, gethostbyname or gethostbyname2",
        "name": "the host name asked for",
        "latency_ns": "call duration",
        "error": "getaddrinfo: EAI_* name from its return, null on success; gethostbyname*: \"NULL\" when it "
                 "returned NULL (the h_errno reason is thread-local storage, unreadable through any stable ABI)",
        "libc": "path of the libc the call went through (as seen from the host; /proc/PID/root/... for "
                "a libc only a container's mount namespace can see)",
        # ts of a gai event is when the call started; it ended at ts + latency_ns.
    },
    "dns": {
        "qname": "question name",
        "qtype": "A, AAAA, SRV, ... by name",
        "server": "nameserver address",
        "dport": "nameserver port",
        "sport": "client port",
        "proto": "udp or tcp",
        "id": "DNS message id",
        "rcode": "NOERROR, NXDOMAIN, SERVFAIL, ... (null when unanswered)",
        "tc": "the answer had the truncated flag",
        "ancount": "answer records",
        "latency_ns": "query to answer",
        "answered": "false when no answer came within the resolver timeout",
        "same_port_pair": "A and AAAA left the same socket and port in parallel (set on the later one)",
        "pair_of": "for same_port_pair: ts, id, qtype of the partner query",
        "tcp_fallback": "this TCP query follows a truncated UDP answer",
        "retransmit": "the same id was sent again",
        "fallback_of": "for tcp_fallback: ts, id, server, sport of the UDP query answered with TC",
        "ns_index": "position of the server in the process's resolv.conf (0 = first), null if not listed",
        "answers": "A/AAAA addresses and CNAME targets in the answer (at most 16)",
        "timeout_ns": "unanswered queries: the resolv.conf timeout that passed",
    },
    "lookup": {
        "name": "the host name asked for",
        "latency_ns": "whole lookup",
        "error": "EAI_* name or rcode, null on success",
        "attempts": "list of the wire queries this lookup made, in order",
        "source": "gai (joined to a libc call) or wire (grouped without libc)",
        "func": "the libc function (source=gai)",
        "resolv_conf": "the process's resolv.conf: nameservers, search, ndots, timeout, attempts, options",
        "timeouts": "attempts that got no answer",
        "same_port_pair": "some A and AAAA of this lookup left one socket and port in parallel",
        "tcp_fallback": "some attempt was a TCP retry after a truncated answer",
        "servers": "nameservers asked, in order",
    },
    "syn_retry": {
        "saddr": "source address",
        "sport": "source port",
        "daddr": "destination address",
        "dport": "destination port",
        "retry": "retransmission number, 1-based (null on aggregated events)",
        "family": "ipv4 or ipv6",
        "elapsed_ns": "time since connect() started",
        "count": "retransmits this event stands for (1, or more when sampled under storms)",
        "sampled": "true on aggregated events standing for retransmits that got no event of their own",
    },
    "connect": {
        "saddr": "source address",
        "sport": "source port",
        "daddr": "destination address",
        "dport": "destination port",
        "latency_ns": "connect() start to outcome",
        "retries": "SYN retransmissions",
        "result": "established, refused, timeout, reset, closed (by its owner) or unreachable (ICMP error)",
        "family": "ipv4 or ipv6",
        "error": "errno name the socket reported (ETIMEDOUT, ECONNREFUSED, EHOSTUNREACH...), null if none",
        "count": "connects this event stands for (1, or more when sampled under storms)",
        "sampled": "true on aggregated events standing for outcomes that got no event of their own",
    },
    "drop": {
        "reason": "kernel drop reason name (from the running kernel's tracefs)",
        "location": "kernel function that dropped the packet",
        "protocol": "ip protocol name",
        "saddr": "source address",
        "daddr": "destination address",
        "sport": "source port, where known",
        "dport": "destination port, where known",
        "iif": "ingress interface index",
        "iif_name": "ingress interface name",
        "return_dev": "for rp_filter drops: where the reverse route points",
        "why": "the cause in words, when the agent can tell",
        "attribution": "how pid/comm were found (exact, flow, none)",
        "count": "drops this event stands for (sampling under storms)",
        "sampled": "true on aggregated events standing for drops that got no event of their own",
        "netns": "network namespace of the ingress device (rp_filter drops, where found)",
    },
    "conntrack": {
        "netns": "network namespace (inode, and name where known)",
        "netns_inode": "network namespace inode",
        "insert_failed": "delta per interval",
        "drop": "delta per interval",
        "early_drop": "delta per interval",
        "invalid": "delta per interval",
        "clash_resolve": "delta per interval",
        "search_restart": "delta per interval",
        "count": "entries in the table",
        "max": "table size limit",
    },
    "agent": {
        "source": "the agent's source (signal) that lost records",
        "losses": "per loss counter of that source (ringbuf_lost, ringbuf_full, kernel_missed, sampled_out...): "
                  "its increase since the last agent event",
        "lost": "sum of losses",
        "dns_lost": "how many of them were DNS records (answers among them look unanswered)",
    },
    "finding": {
        "rule": "stable rule id",
        "severity": "critical, warning or info",
        "summary": "the cause in one sentence",
        "evidence": "counts, addresses, pids, resolv.conf lines",
        "fix": "what to change",
        "pids": "processes affected",
        "comms": "their command names",
        "containers": "their containers",
        "key": "what tells two findings of one rule apart (server, destination, pid...)",
        "first_seen": "when this finding was first seen (unix ns)",
    },
}

# Added by enrichment (agent/enrich.py) where they apply: ``service`` (systemd unit of a host
# process) on any kind; ``nameservers``, ``search``, ``resolv_options`` (the resolv.conf the
# process sees, through its own mount namespace) on gai, dns and lookup events.
ENRICHMENT_FIELDS = ("service", "nameservers", "search", "resolv_options")


def kind_fields(kind: str) -> tuple[str, ...]:
    """Common fields followed by the kind's own, in documentation order."""
    return COMMON_FIELDS + tuple(KINDS.get(kind, {}))
