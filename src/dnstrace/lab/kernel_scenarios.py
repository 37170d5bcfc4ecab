"""Lab builders for the kernel signals: a SYN-dropping peer, rp_filter on a device without
address (seed 003), and a conntrack SNAT port collision (seed 004's insert failures).

Each builder takes a ``Lab`` (which owns and removes everything) and returns a small
dataclass saying what it built. Only per-namespace sysctls are changed.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field

from dnstrace.lab.netns import Lab, Netns, require_tool, veth


def _subnet_octet() -> int:
    """A random second octet so parallel labs do not share addresses."""
    return 64 + secrets.randbelow(128)


def _iptables_packets(ns: Netns, binary: str, table: str, chain: str, comment: str) -> int:
    """Packet counter of the rule carrying ``comment`` in ``ns``."""
    out = ns.exec([binary, "-t", table, "-L", chain, "-n", "-v", "-x"]).stdout
    for line in out.splitlines():
        if comment in line:
            return int(line.split()[0])
    raise RuntimeError(f"rule {comment!r} not found in {binary} {table}/{chain} of {ns.name}")


@dataclass
class SynDropPeer:
    """``client`` reaches ``peer`` on ``port``; the peer silently drops every SYN to it."""

    client: Netns
    peer: Netns
    client_addr: str
    peer_addr: str
    client_addr6: str
    peer_addr6: str
    port: int
    comment: str = field(default="dnstrace-syn-drop")

    def dropped_syns(self) -> int:
        """SYNs the peer's firewall dropped (IPv4 + IPv6): the ground truth for exact counts."""
        return (_iptables_packets(self.peer, "iptables", "filter", "INPUT", self.comment)
                + _iptables_packets(self.peer, "ip6tables", "filter", "INPUT", self.comment))


def syn_dropping_peer(lab: Lab, port: int = 8080) -> SynDropPeer:
    require_tool("iptables", "iptables")
    octet = _subnet_octet()
    client, peer = lab.netns("cli"), lab.netns("peer")
    client_addr, peer_addr = f"10.{octet}.0.2", f"10.{octet}.0.1"
    client6, peer6 = f"fd00:{octet:x}::2", f"fd00:{octet:x}::1"
    veth(client, f"{client_addr}/24", peer, f"{peer_addr}/24")
    client.exec(["ip", "-6", "addr", "add", f"{client6}/64", "dev", "eth0", "nodad"])
    peer.exec(["ip", "-6", "addr", "add", f"{peer6}/64", "dev", "eth0", "nodad"])
    scenario = SynDropPeer(client, peer, client_addr, peer_addr, client6, peer6, port)
    for binary in ("iptables", "ip6tables"):
        peer.exec([binary, "-A", "INPUT", "-p", "tcp", "--syn", "--dport", str(port), "-m", "comment",
                   "--comment", scenario.comment, "-j", "DROP"])
    return scenario


@dataclass
class RpFilterNoAddress:
    """Seed 003: packets from ``sender_addr`` to ``target_addr`` arrive on the router's
    ``ingress_dev`` (no IPv4 address) while the route back to the sender points at
    ``return_dev``; rp_filter is 2 (loose), which acts as strict on an address-less device."""

    sender: Netns
    router: Netns
    far: Netns
    sender_addr: str
    target_addr: str
    ingress_dev: str
    ingress_ifindex: int
    return_dev: str
    rp_filter: int
    fixed_addr: str  # what add_address() puts on the ingress device

    def send_udp(self, count: int, dport: int = 9999) -> None:
        """``count`` UDP datagrams from the sender to the target (they will be dropped)."""
        code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"s.bind(({self.sender_addr!r},0))\n"
                f"for _ in range({count}): s.sendto(b'x',({self.target_addr!r},{dport}))\n")
        self.sender.exec(["python3", "-c", code])

    def add_address(self) -> None:
        """The fix: give the ingress device an IPv4 address (loose rp_filter then passes)."""
        self.router.exec(["ip", "addr", "add", self.fixed_addr, "dev", self.ingress_dev])

    def rp_filter_drops(self) -> int:
        """IPv4 packets the router dropped for rp_filter (its /proc counter, the ground truth)."""
        netstat = self.router.exec(["cat", "/proc/net/netstat"]).stdout.splitlines()
        for names, values in zip(netstat[::2], netstat[1::2], strict=False):
            if names.startswith("TcpExt:"):
                table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
                if "IPReversePathFilter" in table:
                    return int(table["IPReversePathFilter"])
        return -1


def rp_filter_no_address(lab: Lab, rp_filter: int = 2) -> RpFilterNoAddress:
    octet = _subnet_octet()
    sender, router, far = lab.netns("snd"), lab.netns("rtr"), lab.netns("far")
    sender_addr = f"10.{octet}.0.2"
    target_addr = f"10.{octet}.1.1"
    # sender eth0 <-> router eth0 (router side: no IPv4 address)
    veth(sender, f"{sender_addr}/24", router, None, a_ifname="eth0", b_ifname="eth0")
    # router eth1 <-> far eth0: the route back to the sender's subnet goes this way
    veth(router, f"{target_addr}/24", far, f"10.{octet}.1.2/24", a_ifname="eth1", b_ifname="eth0")
    router.exec(["ip", "route", "add", f"10.{octet}.0.0/24", "via", f"10.{octet}.1.2", "dev", "eth1"])
    router.sysctl("net.ipv4.conf.all.rp_filter", str(rp_filter))
    router.sysctl("net.ipv4.conf.eth0.rp_filter", str(rp_filter))
    router_mac = router.exec(["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    # The router cannot answer ARP from an address-less device: a static neighbour instead.
    sender.exec(["ip", "route", "add", f"10.{octet}.1.0/24", "dev", "eth0"])
    sender.exec(["ip", "neigh", "replace", target_addr, "lladdr", router_mac, "dev", "eth0", "nud", "permanent"])
    ifindex = int(router.exec(["cat", "/sys/class/net/eth0/ifindex"]).stdout)
    return RpFilterNoAddress(sender, router, far, sender_addr, target_addr, "eth0", ifindex, "eth1",
                             rp_filter, f"10.{octet}.2.1/24")


@dataclass
class SnatCollision:
    """Seed 004's loss, made deterministic: ``client`` SNATs every UDP packet to ``server:port``
    onto one source port (``nat_port``); a second flow collides with the first in the
    conntrack table, the insert fails and the packet is dropped (NETFILTER_DROP)."""

    client: Netns
    server: Netns
    client_addr: str
    server_addr: str
    port: int
    nat_port: int

    def send_from_ports(self, sports: list[int]) -> None:
        """One UDP datagram from each source port, in the client namespace, one process."""
        subprocess.run(self.sender_argv(sports), check=True, capture_output=True)

    def sender_argv(self, sports: list[int]) -> list[str]:
        """The same as a command line (to run as a separate, attributable process)."""
        code = ("import socket\n"
                f"for sport in {sports!r}:\n"
                "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"    s.bind(({self.client_addr!r},sport))\n"
                "    try:\n"
                f"        s.sendto(b'q',({self.server_addr!r},{self.port}))\n"
                "    except OSError as err:\n"  # EPERM: netfilter dropped it (the point)
                "        print(sport, err.errno)\n"
                "    s.close()\n")
        return self.client.cmd(["python3", "-c", code])


def snat_collision(lab: Lab, port: int = 53, nat_port: int = 5353) -> SnatCollision:
    require_tool("iptables", "iptables")
    octet = _subnet_octet()
    client, server = lab.netns("ctc"), lab.netns("cts")
    client_addr, server_addr = f"10.{octet}.0.2", f"10.{octet}.0.1"
    veth(client, f"{client_addr}/24", server, f"{server_addr}/24")
    client.exec(["iptables", "-t", "nat", "-A", "POSTROUTING", "-p", "udp", "-d", server_addr,
                 "--dport", str(port), "-j", "SNAT", "--to-source", f"{client_addr}:{nat_port}"])
    return SnatCollision(client, server, client_addr, server_addr, port, nat_port)


def conntrack_stat_line_count(ns: Netns) -> int:
    """How many CPU lines /proc/net/stat/nf_conntrack has inside ``ns`` (0 = conntrack not loaded)."""
    proc = ns.exec(["cat", "/proc/net/stat/nf_conntrack"], check=False)
    return max(0, len(proc.stdout.splitlines()) - 1)



# --- SYN storm (seed 003's client reconnecting to a dead IP, times thousands) -------------

SYN_STORM_C = r"""
/* Nonblocking connects to ADDR:PORT as fast as possible for SECONDS; keeps the last
 * HOLD sockets open (they retransmit), closes older ones at once. Prints the count. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
	if (argc != 5) { fprintf(stderr, "usage: %s ADDR PORT SECONDS HOLD\n", argv[0]); return 2; }
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) return 2;
	double end = now() + atof(argv[3]);
	int hold = atoi(argv[4]);
	int *held = calloc(hold > 0 ? hold : 1, sizeof(int));
	long attempts = 0, failed = 0;
	double start = now();
	while (now() < end) {
		for (int burst = 0; burst < 64; burst++) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			if (fd < 0) { failed++; continue; }
			if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EINPROGRESS) attempts++;
			else failed++;
			if (hold > 0) {
				int slot = attempts % hold;
				if (held[slot] > 0) close(held[slot]);
				held[slot] = fd;
			} else {
				close(fd);
			}
		}
	}
	double took = now() - start;
	for (int i = 0; i < hold; i++) if (held[i] > 0) close(held[i]);
	printf("%ld %ld %.3f\n", attempts, failed, took);
	return 0;
}
"""


def build_syn_storm_client(workdir: str) -> str:
    """Compile the storm client (needs gcc + libc6-dev) into ``workdir``; returns its path."""
    import os  # noqa: PLC0415

    gcc = require_tool("gcc", "gcc")
    source, binary = os.path.join(workdir, "syn_storm.c"), os.path.join(workdir, "syn_storm")
    with open(source, "w") as f:
        f.write(SYN_STORM_C)
    subprocess.run([gcc, "-O2", "-o", binary, source], check=True, capture_output=True)
    return binary


@dataclass
class StormResult:
    pid: int
    attempts: int  # connects that left a SYN (EINPROGRESS)
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.attempts / self.seconds if self.seconds else 0.0


def run_syn_storm(scenario: SynDropPeer, binary: str, seconds: float, hold: int = 0,
                  on_start=None) -> StormResult:
    """Run the storm client in the scenario's client namespace against the dropping peer."""
    proc = scenario.client.popen([binary, scenario.peer_addr, str(scenario.port), str(seconds), str(hold)],
                                 stdout=subprocess.PIPE, text=True)
    if on_start:
        on_start(proc)
    out, _ = proc.communicate(timeout=seconds + 30)
    attempts, failed, took = out.split()
    return StormResult(proc.pid, int(attempts), int(failed), float(took))


# --- seed 004's shape: a client behind a router doing DNAT (service IP) and SNAT ----------

SERVICE_ROUTER_NOTE = (
    "On this kernel (6.x) the classic A/AAAA race through DNAT does not lose packets: glibc's two "
    "queries of one socket carry the same original tuple, and when their conntrack entries clash at "
    "confirmation nf_ct_resolve_clash merges them (clash_resolve rises, nothing is dropped). Over a "
    "veth both packets are even handled one after the other on one CPU, so most of the time there is "
    "no clash at all. What does lose forwarded DNS silently is an SNAT port collision: with a one-port "
    "SNAT range (no --random) a new flow whose reply tuple is already taken cannot be inserted "
    "(insert_failed) and the router drops its packets: the client sees nothing and waits its resolver "
    "timeout, in multiples of it.")


@dataclass
class ServiceRouter:
    """``client`` -> ``router`` -> ``server``: the router DNATs ``service_addr:53`` (a Kubernetes
    service IP, as kube-proxy does) to the DNS server and, with ``snat_port``, SNATs forwarded DNS
    onto that single port of its own address. The router namespace has no process: its conntrack
    counters are the evidence (``conntrack_stats()``)."""

    client: Netns
    router: Netns
    server: Netns
    client_addr: str
    router_out_addr: str
    server_addr: str
    service_addr: str
    snat_port: int | None
    udp_timeout_s: int

    def conntrack_stats(self) -> dict[str, int]:
        """The router's /proc/net/stat/nf_conntrack summed over CPUs (ground truth for the tests)."""
        lines = self.router.exec(["cat", "/proc/net/stat/nf_conntrack"]).stdout.split("\n")
        header = lines[0].split()
        totals = dict.fromkeys(header, 0)
        for line in lines[1:]:
            if line.strip():
                for name, value in zip(header, line.split(), strict=False):
                    totals[name] += int(value, 16)
        return totals

    def describe(self) -> list[str]:
        text = [f"client namespace {self.client.name} ({self.client_addr}) resolves through service IP "
                f"{self.service_addr}:53; router namespace {self.router.name} DNATs it to the DNS server "
                f"{self.server_addr}:53 (namespace {self.server.name})"]
        if self.snat_port:
            text.append(f"the router SNATs forwarded DNS onto {self.router_out_addr}:{self.snat_port} only "
                        f"(no --random); a reply tuple stays taken for {self.udp_timeout_s} s "
                        f"(nf_conntrack_udp_timeout): every other new flow in that time collides, is not "
                        f"inserted (insert_failed) and is dropped silently")
        return text


def service_router(lab: Lab, snat_port: int | None = 40053, udp_timeout_s: int = 2) -> ServiceRouter:
    """Build client -> router (DNAT service IP, optional one-port SNAT) -> server. No DNS server is started."""
    require_tool("iptables", "iptables")
    octet = _subnet_octet()
    client, router, server = lab.netns("scl"), lab.netns("srt"), lab.netns("ssv")
    client_addr, router_in = f"10.{octet}.0.2", f"10.{octet}.0.1"
    router_out, server_addr = f"10.{octet}.1.1", f"10.{octet}.1.2"
    service_addr = f"10.{octet}.96.10"
    veth(client, f"{client_addr}/24", router, f"{router_in}/24", a_ifname="eth0", b_ifname="eth0")
    veth(router, f"{router_out}/24", server, f"{server_addr}/24", a_ifname="eth1", b_ifname="eth0")
    client.exec(["ip", "route", "add", "default", "via", router_in])
    server.exec(["ip", "route", "add", "default", "via", router_out])
    router.sysctl("net.ipv4.ip_forward", "1")  # per namespace
    for proto in ("udp", "tcp"):
        router.exec(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", service_addr, "-p", proto, "--dport", "53",
                     "-j", "DNAT", "--to-destination", f"{server_addr}:53"])
    if snat_port:
        router.exec(["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-p", "udp", "--dport", "53",
                     "-j", "SNAT", "--to-source", f"{router_out}:{snat_port}"])
    # Exists once the nat table loaded conntrack; per namespace, so the host is untouched.
    router.sysctl("net.netfilter.nf_conntrack_udp_timeout", str(udp_timeout_s))
    router.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", str(udp_timeout_s))
    return ServiceRouter(client, router, server, client_addr, router_out, server_addr, service_addr,
                         snat_port, udp_timeout_s)
