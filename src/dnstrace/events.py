"""The event vocabulary: which event kinds exist, their fields, and what "failed" means.

Every event is a flat dict with a ``kind``. It stays a plain dict at run time (free on the hot
path) from the loaders through enrichment, aggregation, the spool and the collector; the
``TypedDict`` of each kind below is its one definition, with each field's type and meaning
(``Annotated[type, "meaning"]``), for type checkers and for the docs: ``docs/events.md`` is
generated from it (``python -m dnstrace.events --markdown > docs/events.md``; a test checks the
committed file is current). New kinds need no schema surgery downstream: the collector stores
the common fields as columns and the rest as attributes.

Shared with the vocabulary: ``is_failed`` (the one definition of "this event went wrong", used by
``top``, the metrics, the stored ``failed`` column and ``query --failed``) and the conntrack
counter names. The latency histogram grid is ``dnstrace.latency``.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Required, TypedDict

# --- fields every kind has ------------------------------------------------------------------------


class CommonFields(TypedDict, total=False):
    """Present on every event (enrichment fills container, pod and namespace; empty for host processes)."""

    kind: Required[Annotated[str, "the event kind (the headings of this document)"]]
    ts: Required[Annotated[int, "unix time in ns (for events with a duration: when it started)"]]
    host: Annotated[str, "host id of the agent (set from the batch envelope at the collector)"]
    pid: Annotated[int, "process id (0 when no process could be told)"]
    tid: Annotated[int, "thread id"]
    comm: Annotated[str, "command name of the process"]
    container: Annotated[str, "container id, empty for host processes"]
    pod: Annotated[str, "Kubernetes pod name, where known"]
    namespace: Annotated[str, "Kubernetes namespace, where known"]
    # Added by enrichment (``dnstrace.enrich``) where they apply.
    service: Annotated[str, "systemd unit of a host process (enrichment, any kind)"]
    nameservers: Annotated[list[str], "the process's resolv.conf nameservers, seen through its own mount namespace "
                                      "(enrichment, gai, dns and lookup events)"]
    search: Annotated[list[str], "the process's resolv.conf search domains (enrichment, as nameservers)"]
    resolv_options: Annotated[list[str], "the process's resolv.conf options (enrichment, as nameservers)"]


# --- one definition per kind ----------------------------------------------------------------------


class GaiEvent(CommonFields, total=False):
    """One libc resolver call, from uprobes on the libc the process uses."""

    func: Annotated[str, "getaddrinfo, gethostbyname or gethostbyname2"]
    name: Annotated[str, "the host name asked for"]
    latency_ns: Annotated[int, "call duration (ts is when the call started; it ended at ts + latency_ns)"]
    error: Annotated[str | None, "getaddrinfo: EAI_* name from its return, null on success; gethostbyname*: "
                                 "\"NULL\" when it returned NULL (the h_errno reason is thread-local storage, "
                                 "unreadable through any stable ABI)"]
    libc: Annotated[str, "path of the libc the call went through (as seen from the host; /proc/PID/root/... "
                         "for a libc only a container's mount namespace can see)"]


class DnsEvent(CommonFields, total=False):
    """One DNS query on the wire (UDP or TCP) and its answer, or its timeout."""

    qname: Annotated[str, "question name"]
    qtype: Annotated[str, "A, AAAA, SRV, ... by name"]
    server: Annotated[str, "nameserver address"]
    dport: Annotated[int, "nameserver port"]
    sport: Annotated[int, "client port"]
    proto: Annotated[str, "udp or tcp"]
    id: Annotated[int, "DNS message id"]
    rcode: Annotated[str | None, "NOERROR, NXDOMAIN, SERVFAIL, ... (null when unanswered)"]
    tc: Annotated[bool, "the answer had the truncated flag"]
    ancount: Annotated[int, "answer records"]
    latency_ns: Annotated[int | None, "query to answer"]
    answered: Annotated[bool, "false when no answer came within the resolver timeout"]
    same_port_pair: Annotated[bool, "A and AAAA left the same socket and port in parallel (set on the later one)"]
    pair_of: Annotated[dict[str, Any], "for same_port_pair: ts, id, qtype of the partner query"]
    tcp_fallback: Annotated[bool, "this TCP query follows a truncated UDP answer"]
    retransmit: Annotated[bool, "the same id was sent again"]
    fallback_of: Annotated[dict[str, Any], "for tcp_fallback: ts, id, server, sport of the UDP query answered with TC"]
    ns_index: Annotated[int | None, "position of the server in the process's resolv.conf (0 = first), null if not listed"]
    answers: Annotated[list[str], "A/AAAA addresses and CNAME targets in the answer (at most 16)"]
    timeout_ns: Annotated[int, "unanswered queries: the resolv.conf timeout that passed"]


class LookupEvent(CommonFields, total=False):
    """One whole name lookup: a libc call joined to its wire queries, or wire queries grouped without libc."""

    name: Annotated[str, "the host name asked for"]
    latency_ns: Annotated[int | None, "whole lookup"]
    error: Annotated[str | None, "EAI_* name, or the last answer's rcode (NOERROR: answered without an address), "
                                 "or TIMEOUT; null on success"]
    attempts: Annotated[list[dict[str, Any]], "the wire queries this lookup made, in order"]
    source: Annotated[str, "gai (joined to a libc call) or wire (grouped without libc)"]
    func: Annotated[str | None, "the libc function (source=gai)"]
    resolv_conf: Annotated[dict[str, Any] | None, "the process's resolv.conf: nameservers, search, ndots, timeout, "
                                                  "attempts, options"]
    resolver: Annotated[str, "the resolver model the lookup was grouped by (glibc, musl, go, ...)"]
    resolver_from: Annotated[str, "how that model was known"]
    waited_timeouts: Annotated[bool, "the process sat through an unanswered attempt"]
    via: Annotated[dict[str, Any] | None, "the node-local cache (process) an attempt went through, null if none"]
    timeouts: Annotated[int, "attempts that got no answer"]
    same_port_pair: Annotated[bool, "some A and AAAA of this lookup left one socket and port in parallel"]
    tcp_fallback: Annotated[bool, "some attempt was a TCP retry after a truncated answer"]
    servers: Annotated[list[str], "nameservers asked, in order"]


class SynRetryEvent(CommonFields, total=False):
    """A retransmitted SYN of a connect() in progress."""

    saddr: Annotated[str, "source address"]
    sport: Annotated[int, "source port"]
    daddr: Annotated[str, "destination address"]
    dport: Annotated[int, "destination port"]
    retry: Annotated[int | None, "retransmission number, 1-based (null on aggregated events)"]
    family: Annotated[str, "ipv4 or ipv6"]
    elapsed_ns: Annotated[int, "time since connect() started"]
    count: Annotated[int, "retransmits this event stands for (1, or more when sampled under storms)"]
    sampled: Annotated[bool, "true on aggregated events standing for retransmits that got no event of their own"]


class ConnectEvent(CommonFields, total=False):
    """The outcome of one TCP connect()."""

    saddr: Annotated[str, "source address"]
    sport: Annotated[int, "source port"]
    daddr: Annotated[str, "destination address"]
    dport: Annotated[int, "destination port"]
    latency_ns: Annotated[int, "connect() start to outcome"]
    retries: Annotated[int, "SYN retransmissions"]
    result: Annotated[str, "established, refused, timeout, reset, closed (by its owner) or unreachable (ICMP error)"]
    family: Annotated[str, "ipv4 or ipv6"]
    error: Annotated[str | None, "errno name the socket reported (ETIMEDOUT, ECONNREFUSED, EHOSTUNREACH...), "
                                 "null if none"]
    count: Annotated[int, "connects this event stands for (1, or more when sampled under storms)"]
    sampled: Annotated[bool, "true on aggregated events standing for outcomes that got no event of their own"]


class DropEvent(CommonFields, total=False):
    """A packet the kernel dropped (skb:kfree_skb with a reason)."""

    reason: Annotated[str, "kernel drop reason name (from the running kernel's tracefs)"]
    location: Annotated[str, "kernel function that dropped the packet"]
    protocol: Annotated[str, "ip protocol name"]
    saddr: Annotated[str, "source address"]
    daddr: Annotated[str, "destination address"]
    sport: Annotated[int, "source port, where known"]
    dport: Annotated[int, "destination port, where known"]
    iif: Annotated[int, "ingress interface index"]
    iif_name: Annotated[str, "ingress interface name"]
    return_dev: Annotated[str, "for rp_filter drops: where the reverse route points"]
    why: Annotated[str, "the cause in words, when the agent can tell"]
    attribution: Annotated[str, "how pid/comm were found (exact, flow, none)"]
    count: Annotated[int, "drops this event stands for (sampling under storms)"]
    sampled: Annotated[bool, "true on aggregated events standing for drops that got no event of their own"]
    netns: Annotated[str, "network namespace of the ingress device (rp_filter drops, where found)"]


class ConntrackEvent(CommonFields, total=False):
    """Per interval and network namespace: conntrack counter deltas and the table's fill."""

    netns: Annotated[str, "network namespace (inode, and name where known)"]
    netns_inode: Annotated[int, "network namespace inode"]
    insert_failed: Annotated[int, "delta per interval"]
    drop: Annotated[int, "delta per interval"]
    early_drop: Annotated[int, "delta per interval"]
    invalid: Annotated[int, "delta per interval"]
    clash_resolve: Annotated[int, "delta per interval"]
    search_restart: Annotated[int, "delta per interval"]
    count: Annotated[int, "entries in the table"]
    max: Annotated[int, "table size limit"]


class AgentEvent(CommonFields, total=False):
    """Records the agent itself lost (losses are data)."""

    source: Annotated[str, "the agent's source (signal) that lost records"]
    losses: Annotated[dict[str, int], "per loss counter of that source (ringbuf_lost, ringbuf_full, kernel_missed, "
                                      "sampled_out...): its increase since the last agent event"]
    lost: Annotated[int, "sum of losses"]
    dns_lost: Annotated[int, "how many of them were DNS records (answers among them look unanswered)"]


class FindingEvent(CommonFields, total=False):
    """A cause the findings engine found."""

    rule: Annotated[str, "stable rule id"]
    severity: Annotated[str, "critical, warning or info"]
    summary: Annotated[str, "the cause in one sentence"]
    evidence: Annotated[dict[str, Any], "counts, addresses, pids, resolv.conf lines"]
    fix: Annotated[str, "what to change"]
    pids: Annotated[list[int], "processes affected"]
    comms: Annotated[list[str], "their command names"]
    containers: Annotated[list[str], "their containers"]
    key: Annotated[str, "what tells two findings of one rule apart (server, destination, pid...)"]
    first_seen: Annotated[int, "when this finding was first seen (unix ns)"]
    confidence: Annotated[str, "what it rests on: measured (libc calls timed), wire (grouped from the wire, "
                               "resolver known), wire-only (resolver unknown); empty = not stated"]


# kind -> its definition, in documentation order.
EVENT_TYPES: dict[str, type] = {
    "gai": GaiEvent, "dns": DnsEvent, "lookup": LookupEvent, "syn_retry": SynRetryEvent, "connect": ConnectEvent,
    "drop": DropEvent, "conntrack": ConntrackEvent, "agent": AgentEvent, "finding": FindingEvent,
}

# --- shared constants -----------------------------------------------------------------------------

# The per-interval counters of a conntrack event (its fields), in the order they are shown.
CONNTRACK_COUNTERS = ("insert_failed", "drop", "early_drop", "invalid", "clash_resolve", "search_restart")
# connect results that mean the connection could not be made ("closed" is its owner giving up: not a failure).
FAILED_RESULTS = frozenset(("refused", "timeout", "reset", "unreachable"))


def is_failed(event: Mapping[str, Any]) -> bool:
    """Did this event go wrong? The one definition: top's FAIL column, the metrics' failures, the stored
    ``failed`` column and ``query --failed``.

    An event failed when it carries an error (gai, lookup, connect: ``error`` is null on success, so a
    wire lookup answered without an address, error NOERROR, failed too), an rcode other than NOERROR, no
    answer (``answered`` false), a connect result of refused, timeout, reset or unreachable, or it is a drop.
    """
    if event.get("error") is not None:
        return True
    rcode = event.get("rcode")
    if rcode is not None and rcode != "NOERROR":
        return True
    if event.get("answered") is False:
        return True
    if event.get("result") in FAILED_RESULTS:
        return True
    return event.get("kind") == "drop"


# --- reading the definitions ----------------------------------------------------------------------


def _fields(definition: type) -> dict[str, tuple[str, str]]:
    """field -> (type as text, meaning), in definition order (common fields first)."""
    hints = typing.get_type_hints(definition, include_extras=True)
    out = {}
    for name, hint in hints.items():
        while typing.get_origin(hint) in (Required, typing.NotRequired):
            hint = typing.get_args(hint)[0]
        base, meaning = typing.get_args(hint)[:2] if typing.get_origin(hint) is Annotated else (hint, "")
        out[name] = (_type_text(base), str(meaning))
    return out


def _type_text(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_text(arg) for arg in typing.get_args(hint))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_text(arg) for arg in typing.get_args(hint))}]"
    return "any" if hint is Any else str(getattr(hint, "__name__", hint))


COMMON_FIELDS = tuple(_fields(CommonFields))[:9]  # the nine every event has (the rest come from enrichment)
ENRICHMENT_FIELDS = tuple(_fields(CommonFields))[9:]
# kind -> {field: meaning} of the kind's own fields.
KINDS: dict[str, dict[str, str]] = {
    kind: {name: meaning for name, (_, meaning) in _fields(definition).items() if name not in _fields(CommonFields)}
    for kind, definition in EVENT_TYPES.items()
}


def kind_fields(kind: str) -> tuple[str, ...]:
    """Common fields followed by the kind's own, in documentation order."""
    return COMMON_FIELDS + tuple(KINDS.get(kind, {}))


def undeclared_fields(event: Mapping[str, Any]) -> set[str]:
    """The fields of ``event`` its kind does not declare (all of them, for an unknown kind)."""
    kind = event.get("kind")
    if kind not in EVENT_TYPES:
        return set(event)
    return set(event) - set(kind_fields(str(kind)))


def markdown() -> str:
    """The vocabulary as a Markdown document (docs/events.md)."""
    lines = ["# Event vocabulary", "",
             "Generated from `src/dnstrace/events.py` by `python -m dnstrace.events --markdown`; do not edit.", "",
             "Every event is a flat JSON object with a `kind`. Times are unix ns, latencies ns.", "",
             "**Failed** (`top`'s FAIL column, the metrics' failures, the stored `failed` column, "
             "`dnstrace query --failed`). " + _doc_paragraph(is_failed), ""]
    sections: list[tuple[str, type]] = [("Common fields", CommonFields), *EVENT_TYPES.items()]
    for heading, definition in sections:
        lines += [f"## {heading if definition is CommonFields else f'`{heading}`'}", "",
                  _doc_paragraph(definition), "", "| field | type | meaning |", "|---|---|---|"]
        own = _fields(definition)
        for name, (type_text, meaning) in own.items():
            if definition is CommonFields or name not in _fields(CommonFields):
                lines.append(f"| `{name}` | {type_text} | {meaning.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def _doc_paragraph(thing: Any) -> str:
    """The last paragraph of a docstring on one line, in Markdown."""
    paragraphs = (thing.__doc__ or "").strip().split("\n\n")
    return " ".join(paragraphs[-1].split()).replace("``", "`")


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m dnstrace.events --markdown")
    sys.stdout.write(markdown())
