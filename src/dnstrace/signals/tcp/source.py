"""SYN retransmits and connect outcomes per process and destination (``dnstrace trace tcp``).

The kernel side (``tcp.bpf.c``) attributes each retransmitted SYN to the
process that called connect() and reports how the connect ended. It counts every
connect, retransmit and outcome exactly per (pid, destination) flow and sends at
most ``event_budget`` events per flow and second; what it held back is turned
into aggregated events here (``count`` = how many events one stands for,
``sampled`` = true), so summing ``count`` always gives the exact numbers.
"""

from __future__ import annotations

import errno as errno_names
import socket
import struct
from pathlib import Path
from typing import Any

from dnstrace.errors import UsageError
from dnstrace.kernel.clock import KernelClock
from dnstrace.kernel.ringbuf import Record
from dnstrace.kernel.ringsource import BpfRingSource, Stats
from dnstrace.signals.base import Event

# Layouts of tcp.h (packed by hand there).
EVENT = struct.Struct("<QQIIIi16s16sHHHBB16s")
FLOW_KEY = struct.Struct("<16sIHH")
FLOW_VALUE = struct.Struct("<18Q16s")

EV_SYN_RETRY = 1
EV_CONNECT = 2
RESULTS = ("established", "refused", "timeout", "reset", "closed", "unreachable")
STAT_NAMES = ("connects", "syn_retries") + tuple(f"result_{r}" for r in RESULTS) + (
    "conn_table_full", "flow_table_full", "ringbuf_full", "unknown_owner_retries", "sampled_out")

DEFAULT_EVENT_BUDGET = 25  # events per flow and second before sampling starts
CONN_MAX = 32768  # sockets in SYN_SENT tracked at once
FLOW_MAX = 8192  # (pid, destination) flows counted at once
RINGBUF_PAGES = 64  # 256 KiB
FLOW_IDLE_NS = 60 * 10**9  # flows unchanged this long are removed from the kernel map
AF_INET = 2


def format_addr(family: int, raw: bytes) -> str:
    if family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


def errno_name(code: int) -> str | None:
    return errno_names.errorcode.get(code, str(code)) if code else None


def decode_event(data: bytes, offset_ns: int) -> Event:
    """One ``struct tcp_event`` (bytes) -> a ``syn_retry`` or ``connect`` event dict."""
    return decode_record(EVENT.unpack_from(data), offset_ns)


def decode_record(record: Record, offset_ns: int) -> Event:
    """One ``struct tcp_event`` already unpacked with ``EVENT`` -> the event dict."""
    (ts, elapsed, pid, tid, retries, error, saddr, daddr, sport, dport, family, kind, result,
     comm) = record
    owner_known = pid != 0
    event: Event = {
        "kind": "syn_retry" if kind == EV_SYN_RETRY else "connect",
        "ts": ts + offset_ns,
        "pid": pid if owner_known else None,
        "tid": tid if owner_known else None,
        "comm": comm.split(b"\0", 1)[0].decode("utf-8", "replace") if owner_known else None,
        "family": "ipv4" if family == AF_INET else "ipv6",
        "saddr": format_addr(family, saddr),
        "sport": sport or None,
        "daddr": format_addr(family, daddr),
        "dport": dport,
    }
    if kind == EV_SYN_RETRY:
        event["retry"] = retries
        event["elapsed_ns"] = elapsed if owner_known else None
    else:
        event["latency_ns"] = elapsed
        event["retries"] = retries
        event["result"] = RESULTS[result] if result < len(RESULTS) else f"result{result}"
        event["error"] = errno_name(error)
    event["count"] = 1
    event["sampled"] = False
    return event


class FlowDeltas:
    """Turns the kernel's cumulative per-flow counters into aggregated events for what was sampled."""

    def __init__(self) -> None:
        self.seen: dict[bytes, tuple[int, ...]] = {}

    def update(self, key: bytes, value: bytes, now_ns: int) -> list[Event]:
        daddr, pid, dport, family = FLOW_KEY.unpack(key)
        fields = FLOW_VALUE.unpack(value)
        counters, comm = fields[:18], fields[18]
        sampled_now = (counters[8],) + counters[9:15]
        before = self.seen.get(key, (0,) * 7)
        self.seen[key] = sampled_now
        events: list[Event] = []
        common: Event = {
            "ts": now_ns, "pid": pid, "tid": None,
            "comm": comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
            "family": "ipv4" if family == AF_INET else "ipv6",
            "saddr": None, "sport": None, "daddr": format_addr(family, daddr), "dport": dport,
            "sampled": True,
        }
        retries = sampled_now[0] - before[0]
        if retries > 0:
            events.append({"kind": "syn_retry", **common, "retry": None, "elapsed_ns": None, "count": retries})
        for index, result in enumerate(RESULTS):
            n = sampled_now[1 + index] - before[1 + index]
            if n > 0:
                events.append({"kind": "connect", **common, "latency_ns": None, "retries": None,
                               "result": result, "error": None, "count": n})
        return events

    def forget(self, key: bytes) -> None:
        self.seen.pop(key, None)


class TcpSource(BpfRingSource):
    name = "tcp"
    program = Path(__file__).with_name("tcp.bpf.c")
    counter_names = STAT_NAMES

    def __init__(self, event_budget: int = DEFAULT_EVENT_BUDGET, clock: KernelClock | None = None):
        if event_budget < 1:
            raise UsageError(f"--event-budget must be at least 1, not {event_budget}")
        super().__init__(clock)
        self.event_budget = event_budget
        self.deltas = FlowDeltas()
        self.events_out = 0
        self.aggregated_out = 0
        self.flow_evictions = 0
        self.decode_errors = 0

    def defines(self) -> dict[str, object]:
        return {"FLOW_EVENT_BUDGET": self.event_budget, "CONN_MAX": CONN_MAX, "FLOW_MAX": FLOW_MAX,
                "RINGBUF_PAGES": RINGBUF_PAGES}

    def poll(self) -> list[Event]:
        if not self.reader:
            return []
        self.clock.refresh()
        offset_ns = self.clock.offset_ns
        events = []
        for record in self.reader.drain(EVENT):
            try:
                events.append(decode_record(record, offset_ns))
            except ValueError:  # an address of an unknown family
                self.decode_errors += 1
        self.events_out += len(events)
        return events

    def tick(self, now_ns: int) -> list[Event]:
        return self._collect(now_ns, evict_idle=True)

    def flush(self) -> list[Event]:
        """At shutdown: the last events and what was sampled since the last tick, so counts add up."""
        return self._collect(self.clock.now_unix_ns(), evict_idle=False)

    def _collect(self, now_ns: int, evict_idle: bool) -> list[Event]:
        if not self.bpf:
            return []
        events = self.poll()  # refreshes the clock: now_ns and the kernel's timestamps on one scale
        flows = self.bpf["flows"]
        idle: list[tuple[Any, bytes]] = []  # (bcc key, its bytes)
        mono_now = self.clock.to_ktime_ns(now_ns)
        for key, value in flows.items():
            raw_key, raw_value = bytes(key), bytes(value)
            aggregated = self.deltas.update(raw_key, raw_value, now_ns)
            events.extend(aggregated)
            self.aggregated_out += len(aggregated)
            last_ns = FLOW_VALUE.unpack(raw_value)[17]
            if evict_idle and not aggregated and mono_now - last_ns > FLOW_IDLE_NS:
                idle.append((key, raw_key))
        for key, raw_key in idle:
            try:
                del flows[key]
            except KeyError:
                pass
            self.deltas.forget(raw_key)
            self.flow_evictions += 1
        return events

    def live_stats(self) -> Stats:
        stats: Stats = dict(self.kernel_counters())
        malformed = self.reader.malformed if self.reader is not None else 0
        stats["kernel_missed"] = self.kernel_missed()
        stats.update(events=self.events_out, aggregated_events=self.aggregated_out,
                     flow_evictions=self.flow_evictions, decode_errors=self.decode_errors + malformed)
        return stats
