"""Packets the kernel dropped for routing and netfilter reasons (``dnstrace trace drops``).

The kernel side (``drops.bpf.c``) reports ``skb:kfree_skb`` drops whose reason
is wanted, with the recent netif_receive_skb / fib_table_lookup calls of the same
CPU. Here those are turned into addresses, devices and, for rp_filter drops, the
cause in words (``why``): the ingress device is looked up in every namespace of
the node (pyroute2) for its IPv4 addresses and effective rp_filter. Reason
numbers come from the running kernel's tracefs, never from headers.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnstrace.enrich.proc import read_comm
from dnstrace.errors import UsageError
from dnstrace.kernel.clock import KernelClock
from dnstrace.kernel.ringbuf import Area
from dnstrace.kernel.ringsource import BpfRingSource, Stats
from dnstrace.signals.base import Event

if TYPE_CHECKING:
    from dnstrace.enrich.netdev import DeviceFactsCache

FIB = struct.Struct("<QIiii4s4sHHB3x16s")
EVENT_HEAD = struct.Struct("<5QIHBB16s16s")
NFIB = 4
EVENT_SIZE = EVENT_HEAD.size + NFIB * FIB.size
KEY = struct.Struct("<II16s")
VALUE = struct.Struct("<4Q")
STAT_NAMES = ("drops_seen", "events", "sampled_out", "ringbuf_full", "key_table_full")

DEFAULT_REASONS = ("IP_RPFILTER", "IP_INVALID_SOURCE", "IP_LOCAL_SOURCE", "IP_INVALID_DEST", "IP_INNOROUTES",
                   "IP_LOCALNET", "IP_INADDRERRORS", "IP_OUTNOROUTES", "NETFILTER_DROP")
DEFAULT_EVENT_BUDGET = 20  # events per (reason, sending process, ingress device) and second
KEY_MAX = 4096
RINGBUF_PAGES = 128
KEY_IDLE_S = 60.0
OUTPUT_PATH_WINDOW_NS = 2_000_000  # route lookups this recent belong to the packet being sent
ETHERTYPES = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}
Fib = dict[str, Any]  # one decoded fib_table_lookup call
IP_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_fibs(data: bytes | bytearray) -> list[Fib]:
    fibs: list[Fib] = []
    for i in range(NFIB):
        ts, tb_id, err, oif, iif, src, dst, sport, dport, proto, name = FIB.unpack_from(
            data, EVENT_HEAD.size + i * FIB.size)
        if ts:
            fibs.append({"ts": ts, "tb_id": tb_id, "err": err, "oif": oif, "iif": iif,
                         "src": socket.inet_ntop(socket.AF_INET, src), "dst": socket.inet_ntop(socket.AF_INET, dst),
                         "sport": sport, "dport": dport, "proto": proto, "name": _cstr(name)})
    return fibs


def pick_lookups(fibs: list[Fib], drop_ts: int, rx_ts: int | None) -> tuple[Fib | None, Fib | None]:
    """(forward lookup of the dropped packet, the reverse lookup rp_filter made), either may be None.

    Received packets: the first lookup after netif_receive_skb is the input route
    (its iif is the ingress device), a later one towards the packet's source is the
    reverse-path check. Sent packets: the newest lookup just before the drop.
    """
    if rx_ts:
        recent = [f for f in fibs if rx_ts <= f["ts"] <= drop_ts]
        # Input route lookups carry the ingress ifindex; iif 1 (lo) marks output lookups of other packets.
        inputs = [i for i, f in enumerate(recent) if f["iif"] > 1]
        if not inputs:
            return None, None
        forward = recent[inputs[0]]
        reverse = next((f for f in recent[inputs[0] + 1:] if f["dst"] == forward["src"]), None)
        return forward, reverse
    recent = [f for f in fibs if drop_ts - OUTPUT_PATH_WINDOW_NS <= f["ts"] <= drop_ts]
    return (recent[-1] if recent else None), None


def decode_event(data: bytes | bytearray, reasons: dict[int, str], offset_ns: int,
                 ksym: Callable[[int], str] | None = None) -> Event:
    (ts, _skbaddr, location, pid_tgid, rx_ts, reason, protocol, rx_match, _nfib, ifname,
     comm) = EVENT_HEAD.unpack_from(data)
    fibs = decode_fibs(data)
    forward, reverse = pick_lookups(fibs, ts, rx_ts if rx_match else None)
    pid = pid_tgid >> 32
    event: Event = {
        "kind": "drop",
        "ts": ts + offset_ns,
        "reason": reasons.get(reason, f"reason{reason}"),
        "location": ksym(location) if ksym else hex(location),
        "protocol": ETHERTYPES.get(protocol, hex(protocol)),
        "saddr": None, "daddr": None, "sport": None, "dport": None,
        "iif": None, "iif_name": _cstr(ifname) if rx_match else None,
        "return_dev": None, "why": None,
        "pid": None, "tid": None, "comm": None,
        "count": 1, "sampled": False,
    }
    if forward and (protocol == 0x0800 or not protocol):
        event.update(saddr=forward["src"], daddr=forward["dst"], sport=forward["sport"] or None,
                     dport=forward["dport"] or None)
        if forward["proto"]:
            event["protocol"] = IP_PROTOCOLS.get(forward["proto"], str(forward["proto"]))
        if rx_match and forward["iif"] > 0:
            event["iif"] = forward["iif"]
    if reverse and reverse["name"]:
        event["return_dev"] = reverse["name"]
    if rx_match:
        # Softirq of a received packet: whoever was running is unrelated.
        event["attribution"] = "flow" if event["saddr"] else "none"
    elif pid:
        event.update(pid=pid, tid=pid_tgid & 0xFFFFFFFF, comm=_cstr(comm), attribution="exact")
    else:
        event["attribution"] = "flow" if event["saddr"] else "none"
    return event


def resolve_reasons(names: list[str] | None, table: dict[int, str]) -> tuple[dict[int, str], list[str]]:
    """{number: name} of the wanted reasons present on this kernel, and the wanted names it lacks."""
    by_name = {name: number for number, name in table.items()}
    wanted = list(names or DEFAULT_REASONS)
    unknown = [n for n in wanted if n not in by_name]
    if names and unknown:
        raise UsageError(f"unknown drop reason(s) on this kernel: {', '.join(unknown)}",
                         hint="known: " + ", ".join(sorted(by_name)))
    return {by_name[n]: n for n in wanted if n in by_name}, unknown


class DropsSource(BpfRingSource):
    name = "drops"
    program = Path(__file__).with_name("drops.bpf.c")
    counter_names = STAT_NAMES

    def __init__(self, reasons: list[str] | None = None, event_budget: int = DEFAULT_EVENT_BUDGET,
                 explain: bool = True, clock: KernelClock | None = None):
        if event_budget < 1:
            raise UsageError(f"--event-budget must be at least 1, not {event_budget}")
        super().__init__(clock)
        self.reason_names = reasons
        self.event_budget = event_budget
        self.explain = explain
        self.reasons: dict[int, str] = {}
        self.all_reasons: dict[int, str] = {}
        self.missing_reasons: list[str] = []
        self.ksyms: dict[int, str] = {}
        self.sampled_seen: dict[bytes, int] = {}
        self.key_changed: dict[bytes, tuple[int, float]] = {}
        self.key_evictions = 0
        self.explain_errors = 0
        self.facts: DeviceFactsCache | None = None

    def start(self) -> None:
        """Reason numbers first (this kernel's tracefs): the program is compiled knowing them."""
        from dnstrace.kernel import load as bpfload  # noqa: PLC0415
        from dnstrace.kernel import tracefs

        bpfload.prepare()
        self.all_reasons = tracefs.drop_reasons()
        self.reasons, self.missing_reasons = resolve_reasons(self.reason_names, self.all_reasons)
        if any(number > 1023 for number in self.reasons):
            raise UsageError("drop reason numbers above 1023 are not supported by this build")
        super().start()

    def defines(self) -> dict[str, object]:
        return {"DROP_EVENT_BUDGET": self.event_budget, "KEY_MAX": KEY_MAX, "RINGBUF_PAGES": RINGBUF_PAGES}

    def attach(self) -> None:
        from dnstrace.enrich.netdev import DeviceFactsCache  # noqa: PLC0415

        wanted = self.bpf["wanted"]
        for number in self.reasons:
            wanted[ctypes.c_int(number)] = ctypes.c_ubyte(1)
        self.facts = DeviceFactsCache()

    def _ksym(self, address: int) -> str:
        name = self.ksyms.get(address)
        if name is None:
            try:
                name = self.bpf.ksym(address).decode("utf-8", "replace")
            except Exception:
                name = hex(address)
            if len(self.ksyms) < 4096:
                self.ksyms[address] = name
        return name

    def _decode_record(self, area: Area, offset: int, length: int) -> Event:
        if length != EVENT_SIZE:
            raise ValueError(f"drop record of {length} bytes, not {EVENT_SIZE}")  # counted by the reader
        return decode_event(area[offset:offset + EVENT_SIZE], self.all_reasons, self.clock.offset_ns, self._ksym)

    def _explain(self, event: Event) -> None:
        if event["reason"] != "IP_RPFILTER" or not self.explain or event["iif"] is None or self.facts is None:
            return
        from dnstrace.enrich.netdev import explain_rp_filter_drop  # noqa: PLC0415

        try:
            facts = self.facts.get(event["iif"], event["iif_name"], event["return_dev"])
        except Exception:  # namespaces vanish under our feet; the event stays, unexplained
            self.explain_errors += 1
            return
        event["why"] = explain_rp_filter_drop(facts, event["return_dev"])
        if facts and facts[0].netns:
            event["netns"] = facts[0].netns.label

    def poll(self) -> list[Event]:
        if not self.reader:
            return []
        self.clock.refresh()
        events = self.reader.drain_with(self._decode_record)
        for event in events:
            self._explain(event)
        return events

    def tick(self, now_ns: int) -> list[Event]:
        return self._collect(now_ns, evict_idle=True)

    def flush(self) -> list[Event]:
        """At shutdown: the last events and what was sampled since the last tick, so counts add up."""
        return self._collect(time.time_ns(), evict_idle=False)

    def _collect(self, now_ns: int, evict_idle: bool) -> list[Event]:
        if not self.bpf:
            return []
        events = self.poll()
        counts = self.bpf["counts"]
        now = time.monotonic()
        idle = []
        for key, value in counts.items():
            raw_key = bytes(key)
            total, sampled, _, _ = VALUE.unpack(bytes(value))
            delta = sampled - self.sampled_seen.get(raw_key, 0)
            self.sampled_seen[raw_key] = sampled
            if delta > 0:
                reason, pid, ifname = KEY.unpack(raw_key)
                comm = read_comm(pid) if pid else None
                events.append({
                    "kind": "drop", "ts": now_ns, "reason": self.all_reasons.get(reason, f"reason{reason}"),
                    "location": None, "protocol": None, "saddr": None, "daddr": None, "sport": None,
                    "dport": None, "iif": None, "iif_name": _cstr(ifname) or None, "return_dev": None,
                    "why": None, "pid": pid or None, "tid": None, "comm": comm,
                    "attribution": "exact" if pid else "none",
                    "count": delta, "sampled": True,
                })
            last_total, since = self.key_changed.get(raw_key, (-1, now))
            if total != last_total:
                self.key_changed[raw_key] = (total, now)
            elif evict_idle and now - since > KEY_IDLE_S:
                idle.append((key, raw_key))
        for key, raw_key in idle:
            try:
                del counts[key]
            except KeyError:
                pass
            self.sampled_seen.pop(raw_key, None)
            self.key_changed.pop(raw_key, None)
            self.key_evictions += 1
        return events

    def live_stats(self) -> Stats:
        if self.bpf is None:
            return {}
        stats: Stats = dict(self.kernel_counters())
        stats["kernel_missed"] = self.kernel_missed()
        stats.update(key_evictions=self.key_evictions, decode_errors=self.reader.malformed if self.reader else 0,
                     explain_errors=self.explain_errors)
        if self.facts:
            stats["device_lookups"] = self.facts.lookups
        if self.missing_reasons:
            stats["reasons_missing_on_kernel"] = "+".join(self.missing_reasons)
        return stats
