"""Enrichment: give every event its process's container, pod, namespace, comm and resolv.conf.

``Enricher(config).enrich(events)`` fills, in place, for each event with a pid:

* ``comm`` when the loader could not (read from /proc);
* ``container``, ``pod``, ``namespace`` from the process's cgroup path
  (``dnstrace.agent.containers``); empty strings for host processes, and
  ``service`` (systemd unit) for host processes that run under one;
* for name-resolution events (gai, dns, lookup): ``nameservers``, ``search`` and
  ``resolv_options`` of the resolv.conf the process really sees
  (``/proc/PID/root/etc/resolv.conf``, i.e. its own mount namespace), which the
  findings quote ("first in its resolv.conf").

Everything is cached and bounded: processes by pid (re-read on pid reuse),
attributions by cgroup path, resolv.conf by mount namespace (re-stat'ed every few
seconds). A process that already exited keeps what was learnt while it lived.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dnstrace.agent.bounded import BoundedDict
from dnstrace.agent.containers import ContainerResolver
from dnstrace.agent.proc import ProcessCache, process_root

RESOLV_KINDS = frozenset(("gai", "dns", "lookup"))
RESOLV_RECHECK_S = 5.0


@dataclass(frozen=True)
class ResolvSummary:
    path: str
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    options: tuple[str, ...]

    def fields(self) -> dict:
        return {"nameservers": list(self.nameservers), "search": list(self.search),
                "resolv_options": list(self.options)}


def parse_resolv_conf(text: str, path: str = "") -> ResolvSummary:
    """The parts of resolv.conf the findings use (libc semantics: last search/domain wins)."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        keyword, values = fields[0], fields[1:]
        if keyword == "nameserver" and values:
            nameservers.append(values[0])
        elif keyword in ("search", "domain"):
            search = values if keyword == "search" else values[:1]
        elif keyword == "options":
            options.extend(values)
    return ResolvSummary(path, tuple(nameservers), tuple(search), tuple(options))


def _external_parser():
    """The DNS engineer's resolv.conf module when present (richer: per-netns, Go defaults)."""
    try:
        from dnstrace.agent import resolvconf  # noqa: PLC0415
    except ImportError:
        return None
    parse = getattr(resolvconf, "parse", None)
    return parse if callable(parse) else None


class ResolvCache:
    """resolv.conf per mount namespace; re-read when its mtime changes (checked every few seconds)."""

    def __init__(self, max_entries: int = 1024):
        self.max_entries = max_entries
        # mnt ns inode (or -pid) -> (checked at, mtime, ResolvSummary | None)
        self._entries: BoundedDict = BoundedDict(max_entries)
        self.read_errors = 0
        self._external = _external_parser()

    @property
    def evictions(self) -> int:
        return self._entries.evicted

    def get(self, pid: int, mnt_ns: int | None) -> ResolvSummary | None:
        now = time.monotonic()
        key = mnt_ns if mnt_ns is not None else -pid
        entry = self._entries.get(key)
        path = f"{process_root(pid)}/etc/resolv.conf"
        if entry is not None and now - entry[0] < RESOLV_RECHECK_S:
            self._entries.move_to_end(key)
            return entry[2]
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            # the process is gone: keep what this mount namespace showed before
            return entry[2] if entry is not None else None
        if entry is not None and entry[1] == mtime:
            self._entries.put(key, (now, mtime, entry[2]))
            return entry[2]
        summary = self._read(path)
        self._entries.put(key, (now, mtime, summary))
        return summary

    def _read(self, path: str) -> ResolvSummary | None:
        try:
            with open(path, errors="replace") as f:
                text = f.read(65536)
        except OSError:
            self.read_errors += 1
            return None
        if self._external is not None:
            try:
                parsed = self._external(text)
                nameservers = tuple(str(n) for n in getattr(parsed, "nameservers", ()))
                search = tuple(getattr(parsed, "search", ()) or ())
                options = [f"ndots:{parsed.ndots}", f"timeout:{parsed.timeout_s}", f"attempts:{parsed.attempts}"]
                options += [name.replace("_", "-") for name in ("rotate", "single_request", "single_request_reopen",
                                                                  "use_vc", "edns0") if getattr(parsed, name, False)]
                return ResolvSummary(path, nameservers, search, tuple(options))
            except Exception:  # fall back to our own reading of the same text
                pass
        return parse_resolv_conf(text, path)


class Enricher:
    """Adds process, container and resolver context to events (see module docstring)."""

    def __init__(self, config=None, proc_root: str = "/", max_processes: int = 8192):
        self.config = config
        self.processes = ProcessCache(max_entries=max_processes)
        self.containers = ContainerResolver(root=proc_root)
        self.resolv = ResolvCache()
        self.max_processes = max_processes
        # pid -> (comm, container fields, service, resolv) remembered after the process exits
        self._last_seen: BoundedDict = BoundedDict(max_processes)
        self.counters = {"enriched": 0, "pid_unknown": 0, "remembered": 0}

    def enrich(self, events: list[dict]) -> list[dict]:
        for event in events:
            pid = event.get("pid")
            if not pid or event.get("kind") in ("conntrack", "finding"):
                for name in ("container", "pod", "namespace"):
                    event.setdefault(name, "")
                continue
            self._enrich_one(event, pid)
        return events

    def _enrich_one(self, event: dict, pid: int) -> None:
        info = self.processes.get(pid)
        if info.comm is not None and event.get("comm") and info.comm != event["comm"] \
                and not event["comm"].startswith(info.comm[:15]):
            # pid reused since we cached it (comm changed): read again
            self.processes.forget(pid)
            info = self.processes.get(pid)
        if info.comm is None:
            remembered = self._last_seen.get(pid)
            if remembered is None:
                self.counters["pid_unknown"] += 1
                for name in ("container", "pod", "namespace"):
                    event.setdefault(name, "")
                return
            self.counters["remembered"] += 1
            comm, fields, service, resolv = remembered
        else:
            attribution = self.containers.resolve(info.cgroup)
            comm, fields, service = info.comm, attribution.fields(), attribution.service
            resolv = self.resolv.get(pid, info.mnt_ns) if event.get("kind") in RESOLV_KINDS else None
            self._remember(pid, comm, fields, service, resolv)
        if not event.get("comm"):
            event["comm"] = comm
        for name, value in fields.items():
            if not event.get(name):
                event[name] = value
        if service and "service" not in event:
            event["service"] = service
        if resolv is not None and event.get("kind") in RESOLV_KINDS and "nameservers" not in event:
            event.update(resolv.fields())
        self.counters["enriched"] += 1

    def _remember(self, pid: int, comm, fields, service, resolv) -> None:
        previous = self._last_seen.get(pid)
        if resolv is None and previous is not None:
            resolv = previous[3]
        self._last_seen.put(pid, (comm, fields, service, resolv))

    def stats(self) -> dict:
        return {**self.counters, "process_evictions": self.processes.evictions,
                "resolv_evictions": self.resolv.evictions, **self.containers.stats()}
