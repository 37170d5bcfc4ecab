"""What each resolver family does on the wire, and what that means for a lookup's attempts and latency.

A *model* is known for a process from its libc (the ``gai`` event names the libc it
went through), from its binary (a Go build-info marker, libcares mapped), from its
program (a DNS cache or server) or from its behaviour on the wire (one question sent
to several nameservers at once: musl). Measured on Debian 12 (design.md, "Measured on
2026-12-01"):

* glibc: servers in order, one after the other; ``attempts``, ``rotate``,
  ``single-request(-reopen)``, ``use-vc``; A+AAAA from one socket. A dead first server
  costs one timeout per attempt.
* musl: every query to *all* nameservers at once, first answer wins: a dead server
  costs nothing while another answers.
* Go (pure resolver): A and AAAA in parallel from two sockets, servers in order,
  honours ``timeout:``/``attempts:``; the next server is tried one timeout after the
  first send.
* c-ares: A and AAAA from one socket, servers in order, its own timeouts.
* cache: a DNS cache/forwarder (unbound, dnsmasq, ...) asking upstream for others.

Grouping and latency (pure functions, used by ``lookups``): wire queries of one
process and name form one lookup while each query follows the previous attempts'
*end* (answer or timeout) by less than the gap, and no query repeats a question
already answered in the lookup (a new call). A lookup's latency is when its last
question was settled: its first final answer (so copies a parallel resolver sent
to dead servers do not count), or its last timeout when nothing answered it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dnstrace.bounded import BoundedDict


@dataclass(frozen=True)
class ResolverModel:
    name: str
    parallel_servers: bool  # each query goes to every nameserver at once
    follows_resolv_conf: bool  # reads resolv.conf options (timeout, attempts, ndots)
    description: str


MODELS = {
    "glibc": ResolverModel("glibc", False, True, "glibc: nameservers in order, one timeout each"),
    "musl": ResolverModel("musl", True, True, "musl: every nameserver at once, the first answer wins"),
    "go": ResolverModel("go", False, True, "Go's resolver: nameservers in order, A and AAAA in parallel"),
    "c-ares": ResolverModel("c-ares", False, True, "c-ares: nameservers in order, A and AAAA on one socket"),
    "cache": ResolverModel("cache", False, False, "a DNS cache or forwarder asking its upstream"),
    "unknown": ResolverModel("unknown", False, False, "resolver not known: judged from the wire alone"),
}
UNKNOWN = MODELS["unknown"]

# Programs that answer or forward DNS for others, by comm (exactly: "consul-client" is not Consul).
CACHE_PROGRAMS = {
    "unbound": "unbound", "dnsmasq": "dnsmasq", "named": "BIND named", "coredns": "CoreDNS",
    "node-cache": "NodeLocal DNSCache", "systemd-resolve": "systemd-resolved", "nscd": "nscd",
    "kube-dns": "kube-dns", "pdns_recursor": "PowerDNS Recursor", "kresd": "Knot Resolver",
    "knotd": "Knot DNS", "consul": "Consul",
}
PARALLEL_WINDOW_NS = 10_000_000  # one question to two servers this close together: sent in parallel
GO_BUILDINFO_MAGIC = b"\xff Go buildinf:"
SCAN_BYTES = 4 << 20  # how much of a binary is searched for Go's build-info marker


def cache_program(comm: str | None) -> str | None:
    """The DNS cache/server program a comm belongs to (``"unbound"``), or None."""
    if not comm:
        return None
    return CACHE_PROGRAMS.get(comm)


def model_from_libc(path: str | None) -> ResolverModel | None:
    if not path:
        return None
    base = os.path.basename(path)
    if "musl" in path:
        return MODELS["musl"]
    if base.startswith("libc.so") or base.startswith("libc-"):
        return MODELS["glibc"]
    return None


def model_from_wire(events: list[dict]) -> ResolverModel | None:
    """musl's signature: one question (name, type) sent to two servers within a few ms."""
    first_by_question: dict[tuple, tuple[int, str]] = {}
    for e in events:
        if e.get("proto", "udp") != "udp" or not e.get("server"):
            continue
        key = (str(e.get("qname") or "").lower(), e.get("qtype"))
        seen = first_by_question.get(key)
        if seen is None:
            first_by_question[key] = (e["ts"], e["server"])
        elif seen[1] != e["server"] and abs(e["ts"] - seen[0]) <= PARALLEL_WINDOW_NS:
            return MODELS["musl"]
    return None


def _binary_model(pid: int, by_binary: BoundedDict | None = None) -> ResolverModel | None:
    """Go (build-info marker in the executable) or c-ares (libcares mapped), read from /proc.

    The executable's verdict is cached by (device, inode) in ``by_binary``: many processes
    run one binary."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as maps:
            text = maps.read(1 << 20)
    except OSError:
        return None
    if b"libcares" in text:
        return MODELS["c-ares"]
    if b"libc.so" in text or b"ld-musl" in text:
        return None  # dynamically linked against a libc: the libc's own model (from its calls)
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    key = (st.st_dev, st.st_ino)
    if by_binary is not None and key in by_binary:
        return by_binary.get(key)
    try:
        with open(f"/proc/{pid}/exe", "rb") as exe:
            head = exe.read(SCAN_BYTES)
    except OSError:
        return None
    model = MODELS["go"] if GO_BUILDINFO_MAGIC in head else None
    if by_binary is not None:
        by_binary.put(key, model)
    return model


class ModelRegistry:
    """pid -> (model, how it is known); bounded, filled as evidence arrives.

    ``observe`` runs on a process's DNS queries while it is alive (its binary is read
    then, at most every ``recheck_ns`` per pid: pids are reused); ``model_of`` answers
    later, also after the process exited."""

    def __init__(self, read_binary=_binary_model, limit: int = 16384, recheck_ns: int = 5_000_000_000):
        self.read_binary = read_binary
        self.recheck_ns = recheck_ns
        self.by_pid: BoundedDict = BoundedDict(limit)  # pid -> (model, how, comm, monotonic ns when learnt)
        self.by_binary: BoundedDict = BoundedDict(1024)

    def saw_libc_call(self, pid: int, libc_path: str | None) -> None:
        model = model_from_libc(libc_path)
        if model is not None and pid:
            self.by_pid.put(pid, (model, "libc", None, time.monotonic_ns()))

    def observe(self, pid: int, comm: str | None = None) -> None:
        if not pid:
            return
        known = self.by_pid.get(pid)
        now = time.monotonic_ns()
        if known is not None and (known[1] == "libc" or (known[2] == comm and now - known[3] < self.recheck_ns)):
            return
        if cache_program(comm):
            self.by_pid.put(pid, (MODELS["cache"], "program", comm, now))
            return
        binary = self.read_binary(pid, self.by_binary)
        self.by_pid.put(pid, (binary, "binary", comm, now) if binary is not None else (UNKNOWN, "", comm, now))

    def model_of(self, pid: int, comm: str | None = None, events: Sequence[dict] = ()) -> tuple[ResolverModel, str]:
        known = self.by_pid.get(pid)
        if known is not None and known[1] in ("libc", "program", "binary"):
            return known[0], known[1]
        if cache_program(comm):
            return MODELS["cache"], "program"
        by_wire = model_from_wire(list(events)) if events else None
        if by_wire is not None:
            return by_wire, "wire"
        if known is None:
            self.observe(pid, comm)
            known = self.by_pid.get(pid)
        return (known[0], known[1]) if known is not None else (UNKNOWN, "")


# --- grouping and latency ---------------------------------------------------------------------


def attempt_end(event: dict) -> int:
    """When an attempt was over: its answer, or its timeout when unanswered."""
    if event.get("answered") is False or event.get("latency_ns") is None:
        return event["ts"] + int(event.get("timeout_ns") or 0)
    return event["ts"] + int(event.get("latency_ns") or 0)


def _settles(event: dict) -> bool:
    """An answer that ends its question (not a truncated UDP answer that a TCP retry follows)."""
    return bool(event.get("answered")) and not event.get("tc")


def split_lookups(events: list[dict], gap_ns: int) -> list[list[dict]]:
    """One process's queries for one name (any order) -> the lookups they belong to, in time order."""
    runs: list[list[dict]] = []
    run: list[dict] = []
    run_end = 0
    settled: set = set()
    for event in sorted(events, key=lambda e: e["ts"]):
        question = (str(event.get("qname") or "").lower(), event.get("qtype"))
        repeated = question in settled and not event.get("retransmit") and event.get("proto", "udp") == "udp"
        if run and (event["ts"] - run_end > gap_ns or repeated):
            runs.append(run)
            run, run_end, settled = [], 0, set()
        run.append(event)
        run_end = max(run_end, attempt_end(event))
        if _settles(event):
            settled.add(question)
    if run:
        runs.append(run)
    return runs


def lookup_latency(events: list[dict]) -> int:
    """From the first send until every question of the lookup was settled: at its first final answer
    (copies sent in parallel to other servers, musl, do not count), or at its last timeout when
    nothing answered it."""
    start = min(e["ts"] for e in events)
    settled_at: dict[tuple, int] = {}
    timed_out_at: dict[tuple, int] = {}
    for e in events:
        question = (str(e.get("qname") or "").lower(), e.get("qtype"))
        end = attempt_end(e)
        if _settles(e):
            settled_at[question] = min(end, settled_at.get(question, end))
        else:
            timed_out_at[question] = max(end, timed_out_at.get(question, end))
    ends = list(settled_at.values()) + [end for q, end in timed_out_at.items() if q not in settled_at]
    return max(ends) - start


def waited_for(events: list[dict], model: ResolverModel) -> bool:
    """Did the process wait for an unanswered attempt (a timeout it sat through)?"""
    lost = [e for e in events if e.get("answered") is False]
    if not lost:
        return False
    if not model.parallel_servers:
        return True
    answered_questions = {(str(e.get("qname") or "").lower(), e.get("qtype")) for e in events if _settles(e)}
    return any((str(e.get("qname") or "").lower(), e.get("qtype")) not in answered_questions for e in lost)
