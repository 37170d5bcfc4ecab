"""The seed incidents (shared/seeds/README.md), each rebuilt in throwaway namespaces with its traffic.

An ``Incident`` says what it reproduces, which findings dnstrace should show, and
how to build it on a ``Lab`` from the builders the kernel tests use
(``resolvers``, ``dns_servers``, ``kernel_scenarios``). ``build`` returns a
``Running`` incident: the long-lived client process that suffers (its pid and comm
are what the findings must name), the address at fault, and lines describing the
set-up. Everything is owned by the Lab and removed when it closes.

The client is a small Python program with a recognisable comm (set with
``prctl(PR_SET_NAME)``) that keeps doing what the real application did: resolve a
name in a loop through libc, or connect over TCP in a loop.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dnstrace.lab.netns import Lab, Netns

# The client program: argv = mode comm interval target...
CLIENT_CODE = r"""
import ctypes, socket, sys, threading, time
mode, comm, interval = sys.argv[1], sys.argv[2].encode()[:15], float(sys.argv[3])
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(comm), 0, 0, 0)  # PR_SET_NAME: our comm
if mode == "resolve":
    name, family = sys.argv[4], {"4": socket.AF_INET, "any": socket.AF_UNSPEC}[sys.argv[5]]
    while True:
        try:
            socket.getaddrinfo(name, 80, family, socket.SOCK_STREAM)
        except OSError:
            pass
        time.sleep(interval)
elif mode == "connect":
    addr, port, timeout, threads = sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
    def loop():
        while True:
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect((addr, port))
            except OSError:
                pass
            finally:
                s.close()
            time.sleep(interval)
    for _ in range(threads):
        threading.Thread(target=loop, daemon=True).start()
    while True:
        time.sleep(3600)
"""


@dataclass
class Running:
    """A built incident: who suffers, what is at fault, and how it was set up."""

    client: subprocess.Popen
    comm: str
    address: str  # the address the finding must name
    setup: list[str] = field(default_factory=list)
    report: Callable[[], list[str]] | None = None  # ground truth to print at the end (kernel counters)
    cache_pid: int | None = None  # the node-local cache in between, when the incident has one
    client_ns: Netns | None = None  # where the client runs (for packet captures)

    @property
    def pid(self) -> int:
        return self.client.pid


@dataclass(frozen=True)
class Incident:
    name: str
    seed: str
    title: str
    shows: str  # what dnstrace shows for it
    rules: tuple[str, ...]  # findings expected (the first is the one that names the cause)
    signals: tuple[str, ...]  # signals the findings need
    build: Callable[[Lab], Running]


def start_client(ns: Netns, mode: str, comm: str, interval: float, *args: str) -> subprocess.Popen:
    proc = ns.popen(["python3", "-c", CLIENT_CODE, mode, comm, str(interval), *args],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    if proc.poll() is not None:
        raise RuntimeError(f"lab client {comm} exited at once (code {proc.returncode})")
    return proc


def build_dead_nameserver(lab: Lab) -> Running:
    from dnstrace.lab.resolvers import build_resolver_lab  # noqa: PLC0415

    r = build_resolver_lab(lab)
    r.resolv_conf([r.dead_v4, r.server_v4], options=["timeout:1", "attempts:1"])
    client = start_client(r.client, "resolve", "kafka-writer", 0.5, "web.example.test", "4")
    return Running(client, "kafka-writer", r.dead_v4, [
        f"namespace {r.client.name}: resolv.conf 'nameserver {r.dead_v4}' (dead: port 53 dropped), "
        f"'nameserver {r.server_v4}' (dnsmasq), options timeout:1 attempts:1",
        f"pid {client.pid} (kafka-writer) resolves web.example.test every 0.5 s: each lookup waits 1 s "
        f"for the dead nameserver first",
    ])


def build_truncation(lab: Lab) -> Running:
    from dnstrace.lab.dns_servers import BIG_NAME, build_wire_lab  # noqa: PLC0415

    r = build_wire_lab(lab)
    client = start_client(r.client, "resolve", "consul-client", 0.1, BIG_NAME, "4")
    return Running(client, "consul-client", r.server_v4, [
        f"dnsmasq on {r.server_v4} answers {BIG_NAME} with about 700 bytes: truncated (TC) over UDP, "
        f"in full over TCP; its cache is off, as dnsmasq's is for truncated answers",
        f"pid {client.pid} (consul-client) resolves {BIG_NAME} ten times a second: TC, then TCP, every time",
    ])


def build_syn_drops(lab: Lab) -> Running:
    from dnstrace.lab.kernel_scenarios import syn_dropping_peer  # noqa: PLC0415

    peer = syn_dropping_peer(lab, port=53)
    client = start_client(peer.client, "connect", "node-cache", 0.1, peer.peer_addr, "53", "4", "3")
    return Running(client, "node-cache", peer.peer_addr, [
        f"{peer.peer_addr} (namespace {peer.peer.name}) drops every TCP SYN to port 53 (a resolver "
        f"limiting TCP)",
        f"pid {client.pid} (node-cache) keeps three DNS-over-TCP connects open towards it (force_tcp)",
    ])


def build_rp_filter(lab: Lab) -> Running:
    from dnstrace.lab.kernel_scenarios import rp_filter_no_address  # noqa: PLC0415

    s = rp_filter_no_address(lab)
    client = start_client(s.sender, "connect", "grpc-client", 0.3, s.target_addr, "443", "1.5", "2")
    return Running(client, "grpc-client", s.target_addr, [
        f"router namespace {s.router.name}: {s.ingress_dev} has no IPv4 address, rp_filter={s.rp_filter} "
        f"(loose), the route back to {s.sender_addr} leaves through {s.return_dev}",
        f"pid {client.pid} (grpc-client) reconnects to {s.target_addr}:443 every 300 ms; the router drops "
        f"the SYNs as martians",
    ])


def _router_report(router) -> Callable[[], list[str]]:
    def report() -> list[str]:
        st = router.conntrack_stats()
        return [f"router {router.router.name} conntrack: insert_failed {st.get('insert_failed', 0)}, "
                f"drop {st.get('drop', 0)}, clash_resolve {st.get('clashres', 0)}, "
                f"search_restart {st.get('search_restart', 0)}"]
    return report


def build_conntrack_race(lab: Lab) -> Running:
    """Seed 004's 5 s pattern as this kernel can produce it: silent loss of forwarded DNS on a NAT router.

    See ``kernel_scenarios.SERVICE_ROUTER_NOTE``: the A/AAAA clash itself is resolved here, so the
    loss comes from a one-port SNAT (insert_failed) — same symptom (lookups at the timeout,
    insert_failed on the node), different fix; the finding says which.
    """
    from dnstrace.lab.kernel_scenarios import service_router  # noqa: PLC0415

    s = service_router(lab, snat_port=40053)
    lab.dnsmasq(s.server, [s.server_addr], {"db.example.test": ["10.1.2.5", "fd00::1:2:5"]})
    s.client.write_resolv_conf([s.service_addr], options=["timeout:1", "attempts:1"])
    client = start_client(s.client, "resolve", "grpc-app", 0.3, "db.example.test", "any")
    return Running(client, "grpc-app", s.service_addr, s.describe() + [
        f"pid {client.pid} (grpc-app) resolves db.example.test (A and AAAA from one socket, glibc default) "
        f"every 0.3 s with timeout:1: lookups in the {s.udp_timeout_s} s after a successful one wait 1 s and fail",
    ], report=_router_report(s))


def build_aaaa_dnat(lab: Lab) -> Running:
    """The classic A/AAAA-through-DNAT set-up, unchanged: on this kernel it shows clash handling, not loss."""
    from dnstrace.lab.kernel_scenarios import SERVICE_ROUTER_NOTE, service_router  # noqa: PLC0415

    s = service_router(lab, snat_port=None)
    lab.dnsmasq(s.server, [s.server_addr], {"db.example.test": ["10.1.2.5", "fd00::1:2:5"]})
    s.client.write_resolv_conf([s.service_addr], options=["timeout:1", "attempts:1"])
    client = start_client(s.client, "resolve", "grpc-app", 0.0, "db.example.test", "any")
    return Running(client, "grpc-app", s.service_addr, s.describe() + [
        f"pid {client.pid} (grpc-app) resolves db.example.test as fast as it can (A and AAAA from one socket)",
        "expect no loss on this kernel: " + SERVICE_ROUTER_NOTE,
    ], report=_router_report(s))


def build_ndots(lab: Lab) -> Running:
    from dnstrace.lab.resolvers import build_resolver_lab  # noqa: PLC0415

    r = build_resolver_lab(lab)
    search = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    r.resolv_conf([r.server_v4], options=["ndots:5"], search=search)
    client = start_client(r.client, "resolve", "web-frontend", 0.3, "api.example.test", "4")
    return Running(client, "web-frontend", r.server_v4, [
        f"resolv.conf: search {' '.join(search)}; options ndots:5 (the Kubernetes default)",
        f"pid {client.pid} (web-frontend) resolves api.example.test: three NXDOMAIN answers before the real one",
    ])


def build_node_local_cache(lab: Lab) -> Running:
    """Seed 002 as NodeLocal DNSCache has it: the app asks a cache on 127.0.0.1 (real unbound), the cache
    forwards over TCP only, and the upstream drops SYNs to port 53."""
    from dnstrace.lab.real_software import unbound_cache  # noqa: PLC0415
    from dnstrace.lab.resolvers import build_resolver_lab  # noqa: PLC0415

    r = build_resolver_lab(lab)
    r.server.exec(["iptables", "-A", "INPUT", "-d", r.server_v4, "-p", "tcp", "--dport", "53", "--syn",
                   "-j", "DROP"])
    cache = unbound_cache(lab, r.client, r.server_v4, tcp_upstream=True)
    r.resolv_conf(["127.0.0.1"], options=["timeout:2", "attempts:1"])
    client = start_client(r.client, "resolve", "checkout-api", 0.5, "web.example.test", "4")
    running = Running(client, "checkout-api", r.server_v4, [
        f"namespace {r.client.name}: unbound (pid {cache.pid}) on 127.0.0.1 forwards to {r.server_v4} over TCP "
        f"only (tcp-upstream: yes, like NodeLocal DNSCache's force_tcp)",
        f"{r.server_v4} (dnsmasq, namespace {r.server.name}) drops every TCP SYN to port 53",
        f"pid {client.pid} (checkout-api) resolves web.example.test every 0.5 s through 127.0.0.1 "
        f"(options timeout:2 attempts:1): every lookup waits 2 s and fails",
    ])
    running.cache_pid = cache.pid
    running.client_ns = r.client
    return running


INCIDENTS: tuple[Incident, ...] = (
    Incident("dead-nameserver", "000", "dead first nameserver: lookups take the resolver timeout",
             "per-process lookup latency in multiples of the timeout; the nameserver that never answered",
             ("dead-nameserver", "timeout-multiple-latency"), ("gai", "dns"), build_dead_nameserver),
    Incident("truncation", "001", "truncated answers are not cached: every lookup goes upstream and over TCP",
             "TC answers per name and server, TCP fallbacks, the cache-miss storm",
             ("truncated-not-cached", "tcp-fallback", "cache-miss-storm"), ("gai", "dns"), build_truncation),
    Incident("syn-drops", "002", "DNS over TCP to a resolver that drops SYNs (force_tcp)",
             "SYN retransmits per process and destination",
             ("syn-retransmits",), ("tcp",), build_syn_drops),
    Incident("node-local-cache", "002", "an app behind a node-local cache (unbound on 127.0.0.1) whose TCP "
             "upstream drops SYNs",
             "the app's failing lookups through the cache tied to the cache's SYN retransmits to its upstream; "
             "both processes named, the fix on the cache's hop (never 'remove nameserver 127.0.0.1')",
             ("local-cache-upstream", "syn-retransmits"), ("gai", "dns", "tcp"), build_node_local_cache),
    Incident("rp-filter", "003", "reverse-path filter drops on a device without an IPv4 address",
             "rp_filter drops with source, destination, interface and why; the process retrying",
             ("rp-filter-no-address",), ("drops", "tcp"), build_rp_filter),
    Incident("conntrack-race", "004", "DNS through a NAT router (service IP DNAT + one-port SNAT) vanishes: "
             "lookups wait the resolver timeout",
             "insert_failed in the router's namespace, A+AAAA of one port both lost, lookups at the timeout; "
             "says it is a NAT collision, not the A/AAAA race (which this kernel resolves)",
             ("conntrack-insert-failed", "timeout-multiple-latency"), ("gai", "dns", "conntrack"),
             build_conntrack_race),
    Incident("aaaa-dnat", "004", "A and AAAA from one port through a DNAT service IP (the classic race set-up)",
             "same-port pairs, and the router's clash_resolve/insert_failed at the end: on 6.x kernels the "
             "clash is resolved without loss, so no finding is expected",
             (), ("gai", "dns", "conntrack"), build_aaaa_dnat),
    Incident("ndots", "-", "search-list expansion: NXDOMAIN storm from ndots:5",
             "NXDOMAIN answers for name + search domain",
             ("ndots-nxdomain-storm",), ("dns",), build_ndots),
)
BY_NAME = {incident.name: incident for incident in INCIDENTS}
