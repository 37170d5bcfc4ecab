"""Build and tear down network namespaces, veth pairs and DNS servers for labs and tests.

Everything made here is named with a ``dt-`` prefix and a random suffix and is
removed by ``close()`` (also on Ctrl-C through ``Lab`` as a context manager).
``ip netns exec`` bind-mounts ``/etc/netns/<name>/resolv.conf`` over
``/etc/resolv.conf`` in a fresh mount namespace, so a process started in a lab
namespace sees its own resolv.conf, as a container would.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dnstrace.errors import EnvironmentProblem

NETNS_ETC = Path("/etc/netns")


def run(cmd: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its stderr (these are setup steps, not user input)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if not path:
        raise EnvironmentProblem(f"{name} is not installed", hint=f"apt-get install {package}")
    return path


def stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def unique_name(prefix: str) -> str:
    return f"dt-{prefix}-{secrets.token_hex(3)}"


class Netns:
    """A named network namespace with loopback up; processes inside are killed on close."""

    def __init__(self, prefix: str = "ns"):
        self.name = unique_name(prefix)[:15]
        run(["ip", "netns", "add", self.name])
        self.etc = NETNS_ETC / self.name
        self.processes: list[subprocess.Popen] = []
        self.exec(["ip", "link", "set", "lo", "up"])

    def cmd(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, argv: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return run(self.cmd(argv), check=check, **kwargs)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a long-running process inside; it is killed on close()."""
        proc = subprocess.Popen(self.cmd(argv), **kwargs)
        self.processes.append(proc)
        return proc

    def write_resolv_conf(self, nameservers: list[str], options: Sequence[str] = (), search: Sequence[str] = ()) -> Path:
        """The resolv.conf processes in this namespace will see."""
        self.etc.mkdir(parents=True, exist_ok=True)
        lines = [f"nameserver {ns}" for ns in nameservers]
        if search:
            lines.append("search " + " ".join(search))
        if options:
            lines.append("options " + " ".join(options))
        path = self.etc / "resolv.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def write_hosts(self, text: str) -> Path:
        self.etc.mkdir(parents=True, exist_ok=True)
        path = self.etc / "hosts"
        path.write_text(text)
        return path

    def sysctl(self, key: str, value: str) -> None:
        self.exec(["sysctl", "-q", "-w", f"{key}={value}"])

    def inode(self) -> int:
        return os.stat(f"/run/netns/{self.name}").st_ino

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Anything else still inside (children of exec'd commands).
        pids = run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(self.etc, ignore_errors=True)


def veth(a: Netns, a_addr: str | None, b: Netns | None, b_addr: str | None, a_ifname: str = "eth0",
         b_ifname: str = "eth0") -> tuple[str, str]:
    """Connect ``a`` and ``b`` (``None`` = the host namespace) with a veth pair; addresses are CIDRs."""
    tmp_a, tmp_b = unique_name("va")[:15], unique_name("vb")[:15]
    run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
    run(["ip", "link", "set", tmp_a, "netns", a.name])
    a.exec(["ip", "link", "set", tmp_a, "name", a_ifname])
    a.exec(["ip", "link", "set", a_ifname, "up"])
    if a_addr:
        a.exec(["ip", "addr", "add", a_addr, "dev", a_ifname, "nodad"] if ":" in a_addr else
               ["ip", "addr", "add", a_addr, "dev", a_ifname])
    if b is None:
        b_ifname = tmp_b
        run(["ip", "link", "set", tmp_b, "up"])
        if b_addr:
            run(["ip", "addr", "add", b_addr, "dev", tmp_b])
    else:
        run(["ip", "link", "set", tmp_b, "netns", b.name])
        b.exec(["ip", "link", "set", tmp_b, "name", b_ifname])
        b.exec(["ip", "link", "set", b_ifname, "up"])
        if b_addr:
            b.exec(["ip", "addr", "add", b_addr, "dev", b_ifname, "nodad"] if ":" in b_addr else
                   ["ip", "addr", "add", b_addr, "dev", b_ifname])
    return a_ifname, b_ifname


def wait_for_port(ns: Netns, addr: str, port: int, proto: str = "udp", timeout_s: float = 5.0) -> None:
    """Wait until something listens on addr:port inside ``ns`` (ss is the ground truth)."""
    flag = "-uln" if proto == "udp" else "-tln"
    deadline = time.monotonic() + timeout_s
    needle = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    while time.monotonic() < deadline:
        out = ns.exec(["ss", "-H", flag], check=False).stdout
        if needle in out or f"*:{port}" in out or f"0.0.0.0:{port}" in out:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {needle}/{proto} in {ns.name}")


class Dnsmasq:
    """A real dnsmasq answering from records given here, bound to addresses in ``ns``.

    ``records``: {"name": ["1.2.3.4", "::1"]}; names not listed get NXDOMAIN
    (``--no-resolv`` with ``--local=/#/``... is avoided: we answer only our zone).
    """

    def __init__(self, ns: Netns, listen: list[str], records: dict[str, list[str]] | None = None,
                 extra_args: Sequence[str] = (), port: int = 53):
        require_tool("dnsmasq", "dnsmasq-base")
        self.ns = ns
        self.listen = listen
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="dt-dnsmasq-")
        hosts = Path(self.dir) / "hosts"
        lines = []
        for name, addrs in (records or {}).items():
            for addr in addrs:
                lines.append(f"{addr} {name}")
        hosts.write_text("\n".join(lines) + "\n")
        argv = [
            "dnsmasq", "--keep-in-foreground",
            "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--bind-interfaces",
            "--user=root", "--group=root", f"--port={port}", f"--pid-file={self.dir}/pid",
            "--log-facility=-", "--cache-size=0", "--local-ttl=30",
            # Names outside our records are answered NXDOMAIN locally instead of forwarded.
            "--local=/#/",
        ]
        argv += [f"--listen-address={a}" for a in listen]
        argv += list(extra_args)
        self.proc = ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for addr in listen:
            wait_for_port(ns, addr, port, "udp")

    def close(self) -> None:
        stop_process(self.proc, grace_s=3)
        shutil.rmtree(self.dir, ignore_errors=True)


class Lab:
    """Owns everything a scenario builds; ``with Lab() as lab:`` tears it all down."""

    def __init__(self):
        self._closers: list = []

    def netns(self, prefix: str = "ns") -> Netns:
        ns = Netns(prefix)
        self._closers.append(ns.close)
        return ns

    def dnsmasq(self, ns: Netns, listen: list[str], records=None, extra_args=(), port: int = 53) -> Dnsmasq:
        server = Dnsmasq(ns, listen, records, extra_args, port)
        self._closers.append(server.close)
        return server

    def on_close(self, fn) -> None:
        """Register an undo step (sysctl restore, iptables rule removal...)."""
        self._closers.append(fn)

    def close(self) -> None:
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception:  # cleanup keeps going
                pass

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
