"""Network namespaces on the node and the facts of their devices (pyroute2): addresses, rp_filter.

``netns_list()`` finds every network namespace: those of running processes and the
named ones (``ip netns``, Docker, containerd/CNI) that may hold no process, like a
router namespace. ``in_netns()`` runs a function inside one of them in a short-lived
helper thread: setns(2) on a thread changes only that thread, so the agent's own
threads never move. ``effective_rp_filter`` is max(all, dev), as the kernel computes it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NAMED_NETNS_DIRS = ("/run/netns", "/var/run/netns", "/run/docker/netns", "/var/run/docker/netns",
                    "/run/containerd/netns", "/var/run/containerd/netns")

_libc = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass(frozen=True)
class NetnsRef:
    inode: int
    path: str  # a path whose open() gives the namespace (/run/netns/x or /proc/PID/ns/net)
    name: str | None  # the ip-netns / runtime name, when it has one

    @property
    def label(self) -> str:
        return f"{self.inode}" + (f" ({self.name})" if self.name else "")


def netns_list(proc: str = "/proc") -> list[NetnsRef]:
    """Every network namespace reachable now, one entry per namespace (named ones first)."""
    found: dict[int, NetnsRef] = {}
    for directory in NAMED_NETNS_DIRS:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            try:
                inode = os.stat(path).st_ino
            except OSError:
                continue
            found.setdefault(inode, NetnsRef(inode, path, name))
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        path = f"{proc}/{pid}/ns/net"
        try:
            inode = os.stat(path).st_ino
        except OSError:
            continue  # exited, or a kernel thread we may not look at
        if inode not in found:
            found[inode] = NetnsRef(inode, path, None)
    return list(found.values())


def in_netns(path: str, fn, timeout_s: float = 5.0):
    """Run ``fn()`` in the network namespace at ``path`` (in a helper thread); return its result."""
    result: dict = {}

    def body():
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as err:  # handed to the caller
            result["error"] = err

    thread = threading.Thread(target=body, name="dnstrace-netns", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"reading network namespace {path} took longer than {timeout_s}s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def read_sysctl_here(name: str) -> int | None:
    """A net sysctl of the calling thread's network namespace."""
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class DeviceFacts:
    netns: NetnsRef | None
    ifindex: int
    name: str
    ipv4_addrs: tuple[str, ...]
    rp_filter_all: int | None
    rp_filter_dev: int | None

    @property
    def effective_rp_filter(self) -> int | None:
        return effective_rp_filter(self.rp_filter_all, self.rp_filter_dev)


def effective_rp_filter(all_value: int | None, dev_value: int | None) -> int | None:
    """The kernel uses max(conf/all/rp_filter, conf/<dev>/rp_filter)."""
    values = [v for v in (all_value, dev_value) if v is not None]
    return max(values) if values else None


def device_facts_here(ifindex: int, name: str | None = None) -> DeviceFacts | None:
    """Facts of device ``ifindex`` in the calling thread's namespace (None when absent or renamed)."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - heavy

    with IPRoute() as ipr:
        links = ipr.get_links(ifindex) if ifindex else []
        if not links:
            return None
        link_name = links[0].get_attr("IFLA_IFNAME")
        if name and link_name != name:
            return None
        addrs = tuple(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2, index=ifindex))
    return DeviceFacts(None, ifindex, link_name, addrs,
                       read_sysctl_here("net.ipv4.conf.all.rp_filter"),
                       read_sysctl_here(f"net.ipv4.conf.{link_name}.rp_filter"))


def find_device(ifindex: int, name: str | None, prefer_with: str | None = None) -> list[DeviceFacts]:
    """Devices with this index (and name) across every namespace on the node.

    Interface indexes are per namespace, so several may match; ``prefer_with`` (a
    device name that must also exist there, e.g. the return device of an rp_filter
    drop) narrows the candidates when given and when that leaves any.
    """
    matches = []
    for ref in netns_list():
        def probe(ref=ref):
            facts = device_facts_here(ifindex, name)
            if facts is None:
                return None
            other = None
            if prefer_with:
                from pyroute2 import IPRoute  # noqa: PLC0415

                with IPRoute() as ipr:
                    other = bool(ipr.link_lookup(ifname=prefer_with))
            return facts, other

        try:
            found = in_netns(ref.path, probe)
        except (OSError, TimeoutError, ImportError):
            continue
        except Exception:  # pyroute2 netlink errors: that namespace is gone or unreadable
            continue
        if found:
            facts, has_other = found
            matches.append((DeviceFacts(ref, facts.ifindex, facts.name, facts.ipv4_addrs,
                                        facts.rp_filter_all, facts.rp_filter_dev), has_other))
    preferred = [facts for facts, has_other in matches if has_other]
    return preferred or [facts for facts, _ in matches]


class DeviceFactsCache:
    """find_device() results for a few seconds: drops come in bursts, namespaces change slowly."""

    def __init__(self, ttl_s: float = 2.0, max_entries: int = 256):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.entries: dict[tuple, tuple[float, list[DeviceFacts]]] = {}
        self.lookups = 0
        self.evictions = 0

    def get(self, ifindex: int, name: str | None, prefer_with: str | None) -> list[DeviceFacts]:
        key = (ifindex, name, prefer_with)
        now = time.monotonic()
        hit = self.entries.get(key)
        if hit and now - hit[0] < self.ttl_s:
            return hit[1]
        self.lookups += 1
        facts = find_device(ifindex, name, prefer_with)
        if len(self.entries) >= self.max_entries:
            oldest = min(self.entries, key=lambda k: self.entries[k][0])
            del self.entries[oldest]
            self.evictions += 1
        self.entries[key] = (now, facts)
        return facts


def explain_rp_filter_drop(facts: list[DeviceFacts], return_dev: str | None) -> str:
    """The ``why`` of an IP_RPFILTER drop, naming seed 003's cause when it is the one."""
    back = f" (the route back to the source points to {return_dev})" if return_dev else ""
    if not facts:
        return f"reverse-path filter rejected the source{back}; the ingress device was not found in any namespace"
    dev = facts[0]
    where = f" in netns {dev.netns.label}" if dev.netns else ""
    ambiguous = f" (one of {len(facts)} namespaces with such a device)" if len(facts) > 1 else ""
    mode = dev.effective_rp_filter
    if not dev.ipv4_addrs and mode:
        kind = "loose rp_filter (2) behaves as strict" if mode == 2 else "strict rp_filter (1) rejects it"
        return (f"{kind}: device {dev.name}{where}{ambiguous} has no IPv4 address, so the kernel accepts "
                f"only packets whose reverse route uses {dev.name}{back}; "
                f"add an IPv4 address to {dev.name} or set rp_filter=0 on it and on 'all' "
                f"(effective rp_filter = max(all={dev.rp_filter_all}, {dev.name}={dev.rp_filter_dev}) = {mode})")
    if mode == 1:
        return (f"strict rp_filter (1) on {dev.name}{where}{ambiguous}: the reverse route does not use "
                f"{dev.name}{back}; use loose mode (2) or fix the routing")
    if mode == 2:
        return (f"loose rp_filter (2) on {dev.name}{where}{ambiguous}: no route back to the source at all{back}")
    return f"reverse-path filter rejected the source on {dev.name}{where}{ambiguous}{back}"
