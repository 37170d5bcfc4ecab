"""A client namespace and a server namespace with real nameservers: the base of every DNS lab.

Layout (all inside namespaces the lab creates, cleaned up with it)::

    client ns (eth0 10.53.0.1/24, fd53::1/64)  <-- veth -->  server ns (eth0 10.53.0.2/24, fd53::2/64)
                                                             dnsmasq on 10.53.0.2 and fd53::2 (port 53)
                                                             10.53.0.9 / fd53::9: a "dead" nameserver
                                                             (address present, port 53 dropped silently)

Processes started with ``client.popen``/``client.exec`` see the lab's resolv.conf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dnstrace.lab.netns import Dnsmasq, Lab, Netns, veth

CLIENT_V4, SERVER_V4, DEAD_V4 = "10.53.0.1", "10.53.0.2", "10.53.0.9"
CLIENT_V6, SERVER_V6, DEAD_V6 = "fd53::1", "fd53::2", "fd53::9"

DEFAULT_RECORDS = {
    "web.example.test": ["10.1.2.3", "fd00::1:2:3"],
    "api.example.test": ["10.1.2.4"],
}


@dataclass
class ResolverLab:
    lab: Lab
    client: Netns
    server: Netns
    dnsmasq: Dnsmasq
    records: dict[str, list[str]] = field(default_factory=dict)
    server_v4: str = SERVER_V4
    server_v6: str = SERVER_V6
    dead_v4: str = DEAD_V4
    dead_v6: str = DEAD_V6

    def resolv_conf(self, nameservers: list[str], options: Sequence[str] = (), search: Sequence[str] = ()) -> None:
        """Set what the client namespace's processes see as /etc/resolv.conf."""
        self.client.write_resolv_conf(nameservers, options, search)


def build_resolver_lab(lab: Lab, records: dict[str, list[str]] | None = None,
                       dnsmasq_args: Sequence[str] = ()) -> ResolverLab:
    """Client + server namespaces, dnsmasq answering ``records``, and a dead nameserver address."""
    server = lab.netns("srv")
    client = lab.netns("cli")
    veth(client, f"{CLIENT_V4}/24", server, f"{SERVER_V4}/24")
    client.exec(["ip", "-6", "addr", "add", f"{CLIENT_V6}/64", "dev", "eth0", "nodad"])
    server.exec(["ip", "-6", "addr", "add", f"{SERVER_V6}/64", "dev", "eth0", "nodad"])
    # The dead nameserver: the address exists (no ICMP unreachable), port 53 is dropped.
    server.exec(["ip", "addr", "add", f"{DEAD_V4}/24", "dev", "eth0"])
    server.exec(["ip", "-6", "addr", "add", f"{DEAD_V6}/64", "dev", "eth0", "nodad"])
    for tool, addr in (("iptables", DEAD_V4), ("ip6tables", DEAD_V6)):
        for proto in ("udp", "tcp"):
            server.exec([tool, "-A", "INPUT", "-d", addr, "-p", proto, "--dport", "53", "-j", "DROP"])
    all_records = dict(DEFAULT_RECORDS if records is None else records)
    dnsmasq = lab.dnsmasq(server, [SERVER_V4, SERVER_V6], all_records, extra_args=list(dnsmasq_args))
    resolver = ResolverLab(lab=lab, client=client, server=server, dnsmasq=dnsmasq, records=all_records)
    resolver.resolv_conf([SERVER_V4])
    return resolver
