"""Enrichment: give every event its process's container, pod, namespace, comm and resolv.conf.

``Enricher(config).enrich(events)`` fills, in place, for each event with a pid:

* ``comm`` when the loader could not (read from /proc);
* ``container``, ``pod``, ``namespace`` from the process's cgroup path
  (``dnstrace.enrich.containers``); empty strings for host processes, and
  ``service`` (systemd unit) for host processes that run under one;
* for name-resolution events (gai, dns, lookup): ``nameservers``, ``search`` and
  ``resolv_options`` of the resolv.conf the process really sees
  (``/proc/PID/root/etc/resolv.conf``, i.e. its own mount namespace, read through
  ``resolvconf.ResolvConfCache``), which the findings quote ("first in its resolv.conf").

Everything is cached and bounded: processes by pid (re-read on pid reuse),
attributions by cgroup path, resolv.conf by mount namespace (re-stat'ed every few
seconds). A process that already exited keeps what was learnt while it lived.
"""

from __future__ import annotations

from dnstrace.bounded import BoundedDict
from dnstrace.enrich.containers import ContainerResolver
from dnstrace.enrich.proc import ProcessCache
from dnstrace.enrich.resolvconf import ResolvConfCache

RESOLV_KINDS = frozenset(("gai", "dns", "lookup"))
RESOLV_RECHECK_S = 5.0


class Enricher:
    """Adds process, container and resolver context to events (see module docstring)."""

    def __init__(self, config=None, proc_root: str = "/", max_processes: int = 8192):
        self.config = config
        self.processes = ProcessCache(max_entries=max_processes)
        self.containers = ContainerResolver(root=proc_root)
        self.resolv = ResolvConfCache(recheck_s=RESOLV_RECHECK_S)
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
        thread = event.get("tid") and event.get("tid") != pid  # a thread's comm is its own name (isc-net-0000)
        if info.comm is not None and event.get("comm") and info.comm != event["comm"] and not thread \
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
            resolv = self.resolv.for_pid(pid, info.mnt_ns) if event.get("kind") in RESOLV_KINDS else None
            self._remember(pid, comm, fields, service, resolv)
        if not event.get("comm"):
            event["comm"] = comm
        if comm and "process" not in event:
            event["process"] = comm  # the thread-group leader's name: what users know (dig, not isc-net-0000)
        for name, value in fields.items():
            if not event.get(name):
                event[name] = value
        if service and "service" not in event:
            event["service"] = service
        if resolv is not None and event.get("kind") in RESOLV_KINDS and "nameservers" not in event:
            event.update(resolv.enrichment_fields())
        self.counters["enriched"] += 1

    def _remember(self, pid: int, comm, fields, service, resolv) -> None:
        previous = self._last_seen.get(pid)
        if resolv is None and previous is not None:
            resolv = previous[3]
        self._last_seen.put(pid, (comm, fields, service, resolv))

    def stats(self) -> dict:
        return {**self.counters, "process_evictions": self.processes.evictions,
                "resolv_evictions": self.resolv.evictions, **self.containers.stats()}
