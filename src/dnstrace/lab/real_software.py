"""Third-party DNS software for labs: node-local caches (unbound, dnsmasq), BIND ``named``, real clients.

Everything runs inside a lab's namespaces and is owned by the ``Lab`` (stopped and its
files removed on close):

* ``unbound_cache``: unbound as a node-local cache on 127.0.0.1, forwarding to an
  upstream (optionally over TCP only: ``tcp-upstream: yes``, NodeLocal DNSCache's
  ``force_tcp`` shape).
* ``dnsmasq_cache``: dnsmasq as a forwarding cache (it answers TCP in a forked child).
* ``named_authoritative``: BIND 9 serving one zone from records given here, with
  ``max-udp-size`` to force truncation of large answers.
* ``build_go_client`` / ``build_musl_client``: tiny resolvers compiled into a temp dir
  (Go's pure resolver, CGO off, stdlib only; musl-gcc's getaddrinfo) that resolve a
  name N times and print one line per lookup: ``elapsed_ns ok|error``.
* ``PYCARES_CLIENT``: the same through c-ares (Debian's python3-pycares).
* ``Capture``: tcpdump in a namespace, the ground truth for wire claims.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dnstrace.lab.netns import Lab, Netns, require_tool, stop_process, wait_for_port


@dataclass
class Daemon:
    proc: subprocess.Popen
    dir: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def _daemon(lab: Lab, ns: Netns, argv: list[str], directory: str, listen: str, port: int = 53) -> Daemon:
    proc = ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = Daemon(proc, directory)
    lab.on_close(daemon.close)
    try:
        wait_for_port(ns, listen, port, "udp", timeout_s=10)
    except RuntimeError:
        raise RuntimeError(f"{argv[0]} did not start in {ns.name} (exit code {proc.poll()})") from None
    return daemon


def unbound_cache(lab: Lab, ns: Netns, upstream: str, listen: str = "127.0.0.1", tcp_upstream: bool = False,
                  extra: tuple[str, ...] = ()) -> Daemon:
    """unbound on ``listen``:53 forwarding everything to ``upstream`` (no DNSSEC, no root hints)."""
    require_tool("unbound", "unbound")
    directory = tempfile.mkdtemp(prefix="dt-unbound-")
    conf = Path(directory) / "unbound.conf"
    conf.write_text("\n".join([
        "server:",
        f"  interface: {listen}", "  port: 53", "  do-daemonize: no", "  use-syslog: no", '  logfile: ""',
        '  chroot: ""', '  username: ""', f'  directory: "{directory}"', f'  pidfile: "{directory}/pid"',
        "  do-ip6: no", "  module-config: \"iterator\"", "  access-control: 0.0.0.0/0 allow",
        f"  tcp-upstream: {'yes' if tcp_upstream else 'no'}", "  outgoing-range: 64", "  num-threads: 1",
        '  local-zone: "test." nodefault',  # unbound answers the RFC 6761 names itself otherwise
        *[f"  {line}" for line in extra],
        "forward-zone:", '  name: "."', f"  forward-addr: {upstream}", ""]))
    return _daemon(lab, ns, ["unbound", "-d", "-c", str(conf)], directory, listen)


def dnsmasq_cache(lab: Lab, ns: Netns, upstream: str, listen: str = "127.0.0.1", cache_size: int = 150,
                  extra: tuple[str, ...] = ()) -> Daemon:
    """dnsmasq on ``listen``:53 forwarding to ``upstream`` (caching, unless the answer is truncated)."""
    require_tool("dnsmasq", "dnsmasq-base")
    directory = tempfile.mkdtemp(prefix="dt-dnsmasq-cache-")
    argv = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={listen}", f"--server={upstream}", f"--cache-size={cache_size}",
            "--user=root", "--group=root", f"--pid-file={directory}/pid", "--log-facility=-", *extra]
    return _daemon(lab, ns, argv, directory, listen)


def named_authoritative(lab: Lab, ns: Netns, listen: str, zone: str, records: dict[str, list[str]],
                        max_udp_size: int | None = None, ttl: int = 30) -> Daemon:
    """BIND named authoritative for ``zone`` on ``listen``:53; ``records``: {"name.zone": [addresses]}."""
    require_tool("named", "bind9")
    directory = tempfile.mkdtemp(prefix="dt-named-")
    lines = [f"$TTL {ttl}", f"@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 {ttl}", f"@ IN NS ns.{zone}.",
             f"ns IN A {listen}"]
    for name, addrs in records.items():
        for addr in addrs:
            lines.append(f"{name}. IN {'AAAA' if ':' in addr else 'A'} {addr}")
    Path(directory, "zone.db").write_text("\n".join(lines) + "\n")
    options = [f'directory "{directory}";', f"listen-on {{ {listen}; }};", "listen-on-v6 { none; };",
               "recursion no;", "dnssec-validation no;", f'pid-file "{directory}/named.pid";']
    if max_udp_size:
        options.append(f"max-udp-size {max_udp_size};")
    Path(directory, "named.conf").write_text(
        "options {\n  " + "\n  ".join(options) + "\n};\n"
        f'zone "{zone}" {{ type primary; file "{directory}/zone.db"; }};\n')
    argv = ["named", "-g", "-u", "root", "-c", f"{directory}/named.conf"]
    return _daemon(lab, ns, argv, directory, listen)


GO_CLIENT = """package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	name := os.Args[1]
	count, _ := strconv.Atoi(os.Args[2])
	pause, _ := time.ParseDuration(os.Args[3])
	r := &net.Resolver{PreferGo: true}
	for i := 0; i < count; i++ {
		start := time.Now()
		_, err := r.LookupIPAddr(context.Background(), name)
		status := "ok"
		if err != nil {
			status = "error"
		}
		fmt.Printf("%d %s\\n", time.Since(start).Nanoseconds(), status)
		time.Sleep(pause)
	}
}
"""

MUSL_CLIENT = r"""
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    int count = atoi(argv[2]);
    useconds_t pause = (useconds_t)(atof(argv[3]) * 1e6);
    if (argc > 4) usleep((useconds_t)(atof(argv[4]) * 1e6)); /* time for a tracer to find this libc */
    for (int i = 0; i < count; i++) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        long long start = now_ns();
        int rc = getaddrinfo(argv[1], "80", &hints, &res);
        printf("%lld %s\n", now_ns() - start, rc == 0 ? "ok" : "error");
        fflush(stdout);
        if (res) freeaddrinfo(res);
        usleep(pause);
    }
    return 0;
}
"""

PYCARES_CLIENT = r"""
import select, sys, time, pycares
name, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for _ in range(count):
    channel = pycares.Channel(timeout=float(sys.argv[4]) if len(sys.argv) > 4 else 5.0, tries=1)
    done = []
    start = time.monotonic_ns()
    for qtype in (pycares.QUERY_TYPE_A, pycares.QUERY_TYPE_AAAA):
        channel.query(name, qtype, lambda result, error: done.append(error))
    while len(done) < 2:
        read, write = channel.getsock()
        if not read and not write:
            break
        timeout = channel.timeout(1.0)
        r, w, _ = select.select(read, write, [], timeout)
        for fd in r:
            channel.process_fd(fd, pycares.ARES_SOCKET_BAD)
        for fd in w:
            channel.process_fd(pycares.ARES_SOCKET_BAD, fd)
        if not r and not w:
            channel.process_fd(pycares.ARES_SOCKET_BAD, pycares.ARES_SOCKET_BAD)
    print(time.monotonic_ns() - start, "ok" if any(e is None for e in done) else "error", flush=True)
    time.sleep(pause)
"""


def build_go_client(directory: str) -> str:
    """Compile GO_CLIENT (pure Go resolver, no cgo, stdlib only, no network) -> path of the binary."""
    go = require_tool("go", "golang-go")
    src = Path(directory) / "goresolve"
    src.mkdir(exist_ok=True)
    (src / "main.go").write_text(GO_CLIENT)
    (src / "go.mod").write_text("module goresolve\n\ngo 1.19\n")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOPROXY="off", GOCACHE=str(src / "cache"),
               GOPATH=str(src / "gopath"), HOME=str(src))
    binary = str(src / "goresolve")
    proc = subprocess.run([go, "build", "-o", binary, "."], cwd=src, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"go build failed: {proc.stderr.strip()}")
    return binary


def build_musl_client(directory: str) -> str:
    cc = require_tool("musl-gcc", "musl-tools")
    src = Path(directory) / "muslresolve.c"
    src.write_text(MUSL_CLIENT)
    binary = str(Path(directory) / "muslresolve")
    proc = subprocess.run([cc, "-O1", "-o", binary, str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"musl-gcc failed: {proc.stderr.strip()}")
    return binary


def parse_client_output(text: str) -> list[tuple[int, str]]:
    """Lines of ``elapsed_ns status`` -> [(ns, status)]."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1]))
    return out


class Capture:
    """tcpdump inside ``ns`` writing a pcap; ``packets()`` reads it back as text lines (the ground truth)."""

    def __init__(self, ns: Netns, bpf_filter: str, interface: str = "any"):
        require_tool("tcpdump", "tcpdump")
        self.ns = ns
        self.dir = tempfile.mkdtemp(prefix="dt-pcap-")
        self.path = f"{self.dir}/capture.pcap"
        self.proc = ns.popen(["tcpdump", "-i", interface, "-U", "-n", "-w", self.path, bpf_filter],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not os.path.exists(self.path):
            time.sleep(0.05)
        time.sleep(0.3)  # tcpdump opens the file before its filter is attached

    def stop(self) -> None:
        stop_process(self.proc)

    def packets(self) -> list[str]:
        """One line per packet: ``tcpdump -tt -n -r`` (epoch timestamps)."""
        self.stop()
        out = subprocess.run(["tcpdump", "-tt", "-n", "-r", self.path], capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def capture(lab: Lab, ns: Netns, bpf_filter: str, interface: str = "any") -> Capture:
    cap = Capture(ns, bpf_filter, interface)
    lab.on_close(cap.close)
    return cap
