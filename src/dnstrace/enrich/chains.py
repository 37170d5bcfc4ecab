"""Resolver chains on a node: which local process answers a nameserver address, and what it asked upstream.

When a process's nameserver is served on its own node (127.0.0.1, a node-local
address such as 169.254.20.10, a pod's cache), the lookup's real path is two hops:
app -> cache -> upstream. ``LocalServerFinder`` finds the process behind a nameserver
address as the kernel knows it: a UDP socket bound to that address (or the wildcard)
and port in the *client's* network namespace (``/proc/PID/net/udp``), then the process
holding that socket (``/proc/*/fd``, only processes of that namespace). Answers are
cached per (namespace, address, port) for ``ttl_ns``, misses too, so a lookup flood
costs one ``stat`` per lookup.

``UpstreamIndex`` keeps the recent wire queries of cache programs by question, so a
lookup can carry, under each of its attempts to the cache, the queries the cache sent
upstream for the same name and type while the app waited (``upstream_of``). A
forking cache (dnsmasq answers TCP in a child) is matched by its program's comm too.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from dnstrace.bounded import BoundedDict
from dnstrace.enrich.resolver_models import attempt_end, cache_program

UDP_UNCONNECTED = "07"  # a bound UDP socket that is not connected: a server's
SLACK_NS = 2_000_000  # the app's and the cache's events come from one clock, but in separate records


@dataclass(frozen=True)
class LocalServer:
    pid: int
    comm: str
    program: str  # "unbound", "dnsmasq", ... or the comm when not a known DNS program
    server: str
    port: int

    def as_dict(self) -> dict:
        return asdict(self)


def _proc_addr(hex_addr: str) -> str:
    """/proc/net/udp{,6} address (host-order 32-bit words in hex) -> text."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = struct.unpack(">4I", raw)
    return socket.inet_ntop(socket.AF_INET6, struct.pack("<4I", *words))


def listening_inodes(pid: int, server: str, port: int, proc: str = "/proc") -> list[int]:
    """Inodes of UDP sockets bound to server:port (or the wildcard) in ``pid``'s network namespace."""
    wanted = ipaddress.ip_address(server)
    # a dual-stack wildcard socket on :: also serves IPv4
    tables = ("udp", "udp6") if wanted.version == 4 else ("udp6",)
    inodes = []
    for table in tables:
        try:
            with open(f"{proc}/{pid}/net/{table}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != UDP_UNCONNECTED:
                continue
            addr_hex, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port:
                continue
            addr = ipaddress.ip_address(_proc_addr(addr_hex))
            mapped = getattr(addr, "ipv4_mapped", None)
            if addr == wanted or addr.is_unspecified or mapped == wanted:
                inodes.append(int(fields[9]))
    return inodes


def socket_owner(inodes: list[int], netns: int, proc: str = "/proc") -> int | None:
    """The pid holding one of these socket inodes, among processes of network namespace ``netns``."""
    targets = {f"socket:[{inode}]" for inode in inodes}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"{proc}/{name}/ns/net").st_ino != netns:
                continue
            fds = os.listdir(f"{proc}/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc}/{name}/fd/{fd}") in targets:
                    return int(name)
            except OSError:
                continue
    return None


def _comm(pid: int, proc: str = "/proc") -> str:
    try:
        with open(f"{proc}/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class LocalServerFinder:
    """(client pid, nameserver address, port) -> the LocalServer answering it on this node, or None.

    Call ``find`` while the client lives (the lookups join does on its first query to a
    server): the answer is kept per (pid, server, port), so the lookup emitted after the
    client exited still names its cache. Nothing is guessed for a client never seen alive:
    127.0.0.1 is a different server in every network namespace."""

    def __init__(self, ttl_ns: int = 10_000_000_000, proc: str = "/proc", limit: int = 4096):
        self.ttl_ns = ttl_ns
        self.proc = proc
        self.found: BoundedDict = BoundedDict(limit)  # (netns, server, port) -> (checked_ns, LocalServer | None)
        self.by_client: BoundedDict = BoundedDict(16384)  # (pid, server, port) -> (checked_ns, LocalServer | None)
        self.counters = {"local_server_scans": 0}

    def find(self, pid: int, server: str, port: int, now_ns: int | None = None) -> LocalServer | None:
        if not pid or not server:
            return None
        now_ns = now_ns if now_ns is not None else time.time_ns()
        client_key = (pid, server, port)
        known = self.by_client.get(client_key)
        if known is not None and now_ns - known[0] < self.ttl_ns:
            return known[1]
        try:
            netns = os.stat(f"{self.proc}/{pid}/ns/net").st_ino
        except OSError:  # gone: what it had when last seen alive, if anything
            return known[1] if known is not None else None
        key = (netns, server, port)
        cached = self.found.get(key)
        if cached is not None and now_ns - cached[0] < self.ttl_ns:
            local = cached[1]
        else:
            local = self._scan(pid, netns, server, port)
            self.found.put(key, (now_ns, local))
        self.by_client.put(client_key, (now_ns, local))
        return local

    def _scan(self, pid: int, netns: int, server: str, port: int) -> LocalServer | None:
        self.counters["local_server_scans"] += 1
        try:
            inodes = listening_inodes(pid, server, port, self.proc)
        except ValueError:  # not an address
            return None
        if not inodes:
            return None
        owner = socket_owner(inodes, netns, self.proc)
        if owner is None:
            return None
        comm = _comm(owner, self.proc)
        return LocalServer(owner, comm, cache_program(comm) or comm, server, port)


class UpstreamIndex:
    """Recent queries sent by cache processes, by question: what a cache asked upstream and when."""

    def __init__(self, limit: int = 16384, per_question: int = 32):
        self.by_question: BoundedDict = BoundedDict(limit)  # (qname lower, qtype) -> deque of dns events
        self.per_question = per_question
        self.cache_pids: BoundedDict = BoundedDict(4096)  # pids found serving DNS -> None

    def is_cache(self, event: dict) -> bool:
        return event.get("pid") in self.cache_pids or cache_program(event.get("comm")) is not None

    def add(self, event: dict) -> None:
        if not self.is_cache(event):
            return
        key = (str(event.get("qname") or "").lower(), event.get("qtype"))
        queue = self.by_question.get(key)
        if queue is None:
            queue = deque(maxlen=self.per_question)
            self.by_question.put(key, queue)
        queue.append(event)

    def upstream_of(self, attempt: dict, cache: LocalServer, inflight: Sequence[dict] = ()) -> list[dict]:
        """The cache's queries for the attempt's question sent while the attempt waited, in send order."""
        self.cache_pids.put(cache.pid, None)
        start = attempt["ts"] - SLACK_NS
        end = (attempt_end(attempt) if attempt.get("answered") is not None and not attempt.get("pending")
               else attempt["ts"] + int(attempt.get("timeout_ns") or 5_000_000_000)) + SLACK_NS
        key = (str(attempt.get("qname") or "").lower(), attempt.get("qtype"))
        found: dict = {}
        for event in list(self.by_question.get(key) or ()) + [e for e in inflight if self.is_cache(e)]:
            if (event.get("pid") == cache.pid or event.get("comm") == cache.comm) and start <= event["ts"] <= end:
                if (str(event.get("qname") or "").lower(), event.get("qtype")) == key and event.get("pid") != attempt.get("pid"):
                    found.setdefault((event.get("pid"), event["ts"], event.get("id"), event.get("sport")), event)
        return sorted(found.values(), key=lambda e: e["ts"])
