"""What a finding is: the ``Finding`` a rule returns, the ``Rule`` that declares it, and the
vocabulary rules share to name processes, state their confidence and grade severity.

A finding has a stable ``rule`` id, a ``severity``, a one-sentence ``summary`` that names
the cause with the processes and addresses involved, the ``evidence`` (counts, addresses,
pids, the resolv.conf line) and a ``fix``. Findings become events too (kind ``finding``),
so they ship like the rest.

A finding's ``confidence`` says what it rests on: "measured" (libc calls timed), "wire"
(grouped from the wire, resolver known), "wire-only" (resolver unknown: the claim is the
wire's alone).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dnstrace.units import format_duration_ns

if TYPE_CHECKING:
    from dnstrace.findings.window import Window

Event = dict[str, Any]  # an event as the pipeline hands it on (see dnstrace.events)
Evidence = dict[str, Any]  # what a finding shows for itself: JSON-ready values
ProcessKey = tuple[Any, Any]  # (pid, process name) as events carry them

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
DNS_PORTS = frozenset((53, 853, 8600))
# Programs that answer or forward DNS for others: their upstream traffic is not "an app's lookups".
DNS_SERVER_COMMS = frozenset(("dnsmasq", "unbound", "named", "coredns", "systemd-resolve", "node-cache",
                              "kube-dns", "pdns_recursor", "knotd", "knot-resolver", "kresd", "consul", "nscd"))
WIRE_ONLY_NOTE = " (judged from the wire alone: this process's resolver is not known)"


@dataclass
class Finding:
    rule: str
    severity: str
    summary: str
    evidence: Evidence
    fix: str
    key: str = ""  # what makes two findings of one rule different (server, destination...)
    pids: list[Any] = field(default_factory=list)
    comms: list[Any] = field(default_factory=list)
    containers: list[Any] = field(default_factory=list)
    confidence: str = ""  # "measured", "wire", "wire-only" (see the module docstring); "" = not stated

    @classmethod
    def of_process(cls, rule: str, severity: str, summary: str, evidence: Evidence, fix: str, pid: Any,
                   comm: Any, container: str, key: str = "") -> Finding:
        """A finding about one process (keyed by its pid unless ``key`` says otherwise)."""
        return cls(rule, severity, summary, evidence, fix, key=key or f"{pid}", pids=[pid], comms=[comm],
                   containers=[container] if container else [])

    def event(self, ts_ns: int, host: str = "") -> Event:
        return {"kind": "finding", "ts": ts_ns, "host": host, "pid": self.pids[0] if self.pids else 0,
                "tid": 0, "comm": self.comms[0] if self.comms else "",
                "container": self.containers[0] if self.containers else "", "pod": "", "namespace": "",
                "rule": self.rule, "severity": self.severity, "summary": self.summary,
                "evidence": self.evidence, "fix": self.fix, "key": self.key,
                "pids": list(self.pids), "comms": list(self.comms), "containers": list(self.containers),
                "confidence": self.confidence}


Check = Callable[["Window"], list[Finding]]


@dataclass(frozen=True)
class Rule:
    """One check over the window and the rule ids its findings carry, each with the line the docs show."""

    check: Check
    reports: Mapping[str, str]  # rule id -> what a finding of it means (README, --help)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.reports)


# --- severity and confidence ------------------------------------------------------------


def lower(severity: str) -> str:
    """One level less severe ("info" stays "info")."""
    return {"critical": "warning", "warning": "info"}.get(severity, severity)


def confidence_of(lookups: Iterable[Event]) -> str:
    """What lookup-based claims rest on: libc calls timed, wire grouping with a known or unknown resolver."""
    lookups = list(lookups)
    if not lookups or any(e.get("source") == "gai" or e.get("kind") == "gai" for e in lookups):
        return "measured"
    if all(e.get("resolver") in (None, "unknown") for e in lookups):
        return "wire-only"
    return "wire"


def waited(lookup: Event) -> bool:
    """The lookup sat through a timeout (older streams without the field: assume it did)."""
    return lookup.get("waited_timeouts") is not False


# --- naming processes -------------------------------------------------------------------


def process_name(e: Mapping[str, Any]) -> Any:
    """The process name of an event: the thread-group leader's (``process``), else the thread's comm."""
    return e.get("process") or e.get("comm")


def is_dns_server_comm(comm: Any) -> bool:
    # Exact names only: "consul-client" or "named-pipe-app" are not DNS servers.
    return bool(comm) and comm in DNS_SERVER_COMMS


def proc_label(pid: Any, comm: Any, container: str = "") -> str:
    text = f"pid {pid} ({comm or '?'}"
    if container:
        text += f", container {container}"
    return text + ")"


def container_of(events: Iterable[Event]) -> str:
    """The first container name among the events ("" for a host process)."""
    return next((str(e["container"]) for e in events if e.get("container")), "")


def affected(events: Iterable[Event]) -> tuple[list[Any], list[Any], list[Any]]:
    """pids, comms, containers of the events, most frequent first (at most 10 each)."""
    pids: Counter[Any] = Counter()
    comms: Counter[Any] = Counter()
    containers: Counter[Any] = Counter()
    for e in events:
        if e.get("pid"):
            pids[e["pid"]] += 1
        if process_name(e):
            comms[process_name(e)] += 1
        if e.get("container"):
            containers[e["container"]] += 1
    return ([p for p, _ in pids.most_common(10)], [c for c, _ in comms.most_common(10)],
            [c for c, _ in containers.most_common(10)])


def top_process(events: Iterable[Event]) -> dict[str, Any]:
    """The process with the most events: its pid, comm and container."""
    counts = Counter((e.get("pid"), process_name(e), e.get("container") or "") for e in events if e.get("pid"))
    if not counts:
        return {"pid": 0, "comm": "?", "container": ""}
    (pid, comm, container), _ = counts.most_common(1)[0]
    return {"pid": pid, "comm": comm, "container": container}


def by_process(events: Iterable[Event]) -> dict[ProcessKey, list[Event]]:
    """Events grouped by (pid, process name); events without a pid are left out."""
    groups: dict[ProcessKey, list[Event]] = defaultdict(list)
    for e in events:
        if e.get("pid"):
            groups[(e["pid"], process_name(e))].append(e)
    return groups


def resolv_path(pid: Any) -> str:
    """The resolv.conf the process sees, as a path a person can open."""
    return f"/proc/{pid}/root/etc/resolv.conf"


def dur(ns: float | None) -> str:
    return format_duration_ns(ns)
