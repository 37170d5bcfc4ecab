"""What /proc tells about a process: comm, cgroup, namespaces, its root directory.

Lookups are cached with a bound (processes come and go; the cache never grows
past ``max_entries``). A pid that vanished yields ``None`` fields, not errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dnstrace.bounded import BoundedDict


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    comm: str | None
    cgroup: str | None  # cgroup v2 path (or the v1 name=systemd path on hybrid hosts)
    mnt_ns: int | None  # inode of the mount namespace
    net_ns: int | None  # inode of the network namespace
    start_time: int | None  # clock ticks since boot: tells pid reuse apart


def read_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def read_cgroup(pid: int) -> str | None:
    """The unified (v2) cgroup path, else the systemd v1 one."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    fallback = None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0":
            return path
        if controllers == "name=systemd":
            fallback = path
    return fallback


def ns_inode(pid: int, ns: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: fields after the last ')' are fixed.
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_root(pid: int) -> str:
    """The process's view of '/': files it sees are under this path."""
    return f"/proc/{pid}/root"


class ProcessCache:
    """Bounded LRU of ProcessInfo by pid; re-reads when the pid was reused."""

    def __init__(self, max_entries: int = 8192):
        self.max_entries = max_entries
        self._entries: BoundedDict = BoundedDict(max_entries)  # pid -> ProcessInfo

    @property
    def evictions(self) -> int:
        return self._entries.evicted

    def get(self, pid: int) -> ProcessInfo:
        info = self._entries.touch(pid)
        if info is not None:
            return info
        info = ProcessInfo(
            pid=pid,
            comm=read_comm(pid),
            cgroup=read_cgroup(pid),
            mnt_ns=ns_inode(pid, "mnt"),
            net_ns=ns_inode(pid, "net"),
            start_time=start_time(pid),
        )
        if info.comm is not None:  # cache only live processes
            self._entries.put(pid, info)
        return info

    def forget(self, pid: int) -> None:
        self._entries.pop(pid, None)
