"""DNS on the wire, per process: the kernel shell of ``dnstrace trace dns``.

Kernel side: ``dns.bpf.c`` (cgroup_skb egress + ingress on the cgroup v2 root,
attached through BPF links). UDP queries wait in a bounded kernel hash map until their
answer arrives; the answer then writes ONE ring-buffer record holding both (a
"pair"). TCP, odd packets and answers whose query is not in the map come as one
record per packet, with the socket's owner process. The first packet of a new DNS
socket announces its owner (so its resolv.conf is read while it is alive).

``DnsWireSource`` (the ``Source``, on the common ``kernel.ringsource`` lifecycle): loads
the program, reads the ring buffer from shared memory (``ringbuf.RingBufReader``; its fd
goes to the runner's epoll), decodes each record (layouts in ``abi``) with one ``struct``
unpack, its kernel timestamps through the shared ``kernel.clock``, and feeds the pure
``tracker.DnsTracker``. Pairs arrive in answer order; the detector flags need send
order, so every query carries its process's send sequence number (``qseq``): a pair
whose process has earlier queries not seen yet first takes those out of the kernel map
(a "gap sweep"; they become user-space in-flight queries, their answers come as
packets). Once a second (``tick``), queries older than SWEEP_AGE_NS are taken out of
the kernel map the same way, so timeouts and ``pending`` see them.

Hot path (DNS floods): one pair record per query, handed to the tracker's flow cache
(see ``tracker``); address and comm texts are cached. Wake-ups stay the kernel's
default (only when the agent had read everything): under a flood the agent lags a
little and is not woken per record. ``bench/bench_dns_flood.py`` measures it.
"""

from __future__ import annotations

import ctypes
import mmap
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from dnstrace.enrich.resolvconf import ResolvConfCache
from dnstrace.errors import UsageError
from dnstrace.kernel import load as bpfload
from dnstrace.kernel.clock import KernelClock
from dnstrace.kernel.ringbuf import Decoder
from dnstrace.kernel.ringsource import BpfRingSource
from dnstrace.signals.base import Event
from dnstrace.signals.dns.abi import (
    DIR_EGRESS,
    DIR_INGRESS,
    DNS_QUERY_CAPTURE,
    EVENT_HDR,
    EVENT_HDR_SIZE,
    HDR_CAP_LEN,
    HDR_DIRECTION,
    HDR_KIND,
    HDR_PAYLOAD_LEN,
    HDR_PID,
    HDR_PROTO,
    HDR_QSEQ,
    KERNEL_COUNTERS,
    KIND_OWNER,
    KIND_PAIR,
    PAIR_EXT,
    PAIR_QUERY_START,
    PROTO_UDP,
    QUERY_ENTRY,
    QUERY_ENTRY_DATA,
    QUERY_ENTRY_HEAD,
    QUERY_KEY,
)
from dnstrace.signals.dns.caches import TextCache, comm_text, ipv4_text, ipv6_text
from dnstrace.signals.dns.inflight import KernelInflight
from dnstrace.signals.dns.tracker import DnsTracker, Packet

SWEEP_AGE_NS = 500_000_000  # tick: kernel-held queries older than this move to user space (min timeout 1 s)
GAP_SWEEP_BUDGET_NS = 20_000_000  # CPU per second for map reads restoring send order; beyond, order as it comes
PENDING_CACHE_NS = 200_000_000  # pending(): the kernel map is read at most this often
FLUSH_MAX_DRAINS = 16  # at shutdown, up to 16 x 65536 records
# The ring buffer's producer area as records are decoded from it: mmapped in the agent, bytes in the
# unit tests. Its slices are bytes, hashable: the tracker's caches key on them.
RingArea = mmap.mmap | bytes


class DnsWireSource(BpfRingSource):
    name = "dns"
    program = Path(__file__).with_name("dns.bpf.c")
    counters_map = "counters"
    counter_names = KERNEL_COUNTERS

    def __init__(self, ports: Iterable[int] = (53,), ringbuf_pages: int = 4096, max_inflight: int = 65536,
                 kernel_inflight: int = 32768, clock: KernelClock | None = None):
        self.ports = sorted({int(p) for p in ports})
        for port in self.ports:
            if not 0 < port < 65536:
                raise UsageError(f"not a port number: {port}")
        if not self.ports or len(self.ports) > 64:
            raise UsageError("give between 1 and 64 DNS ports")
        super().__init__(clock)
        self.ringbuf_pages = ringbuf_pages
        self.kernel_inflight = kernel_inflight
        self.resolv_cache = ResolvConfCache()
        self.tracker = DnsTracker(resolv_for_pid=self.resolv_cache.for_pid, max_inflight=max_inflight)
        self.links: list[bpfload.CgroupLink] = []
        self._offset_ns = 0  # the clock's offset, read when started and at each poll and tick
        self._clock_followed = False  # _offset_ns has been read from the clock
        self._ipv4 = TextCache(ipv4_text)  # separate: an IPv6 address can have the bytes of an IPv4 one
        self._ipv6 = TextCache(ipv6_text)
        self._comms = TextCache(comm_text)
        self._events: list[Event] = []  # filled by _record during a poll
        self.inflight_map: KernelInflight | None = None  # the kernel's in-flight query map
        self._next_qseq: dict[int, int] = {}  # pid -> the send sequence number expected next
        self._gap_budget_ns = GAP_SWEEP_BUDGET_NS
        self._pending_cache: tuple[int, list[Event]] = (0, [])
        self.order = dict(gap_sweeps=0, gap_sweeps_skipped=0, swept=0, pairs=0)

    def defines(self) -> dict[str, object]:
        return {"RINGBUF_PAGES": self.ringbuf_pages, "INFLIGHT_MAX": self.kernel_inflight}

    def attach(self) -> None:
        bpf = self.bpf
        ports = bpf["dns_ports"]
        for port in self.ports:
            ports[ctypes.c_ushort(port)] = ctypes.c_ubyte(1)
        root = bpfload.find_cgroup2_root()
        egress = bpf.load_func("dns_egress", bpf.CGROUP_SKB)
        ingress = bpf.load_func("dns_ingress", bpf.CGROUP_SKB)
        self.inflight_map = KernelInflight(bpf["inflight"], self.kernel_inflight)
        self._follow_clock()
        self.links.append(bpfload.CgroupLink(egress.fd, root, bpfload.BPF_CGROUP_INET_EGRESS))
        self.links.append(bpfload.CgroupLink(ingress.fd, root, bpfload.BPF_CGROUP_INET_INGRESS))

    def detach(self) -> None:
        for link in self.links:
            link.close()
        self.links = []
        self.inflight_map = None

    def _follow_clock(self) -> None:
        """Kernel timestamps to unix ns with the clock's offset now. When it moved (a wall-clock step,
        seen by this refresh or by another source's on the shared clock) the tracker moves with it."""
        self.clock.refresh()
        step_ns = self.clock.offset_ns - self._offset_ns
        if step_ns and self._clock_followed:
            self.tracker.shift(step_ns)
            self._pending_cache = (0, [])  # converted before the step: read the kernel map again
        self._offset_ns = self.clock.offset_ns
        self._clock_followed = True

    def decode(self, area: RingArea, offset: int, length: int) -> Packet:
        """One ring buffer record (``dns_event_hdr`` + captured payload) -> a Packet."""
        if length < EVENT_HDR_SIZE:
            raise ValueError("record shorter than its header")  # the reader counts it as malformed
        return self._packet(EVENT_HDR.unpack_from(area, offset), area, offset + EVENT_HDR_SIZE,
                            length - EVENT_HDR_SIZE)

    def _packet(self, header: tuple[Any, ...], area: RingArea, data_start: int, data_room: int) -> Packet:
        (ts, cookie, pid, tid, seq, _qseq, saddr, daddr, sport, dport, payload_len, cap_len,
         family, proto, direction, _kind, comm, _reserved) = header
        addresses = self._ipv4 if family == 4 else self._ipv6
        return Packet(ts + self._offset_ns, cookie, pid, tid, self._comms[comm], family, proto, direction,
                      addresses[saddr], addresses[daddr], sport, dport, payload_len, seq,
                      area[data_start:data_start + min(cap_len, data_room)])

    def _record(self, area: RingArea, offset: int, length: int) -> None:
        """Feed one ring buffer record to the tracker; its events go to ``self._events``."""
        if length < EVENT_HDR_SIZE:
            raise ValueError("record shorter than its header")
        header = EVENT_HDR.unpack_from(area, offset)
        kind = header[HDR_KIND]
        if kind == KIND_PAIR:
            self._pair(header, area, offset, length)
            return
        if kind == KIND_OWNER:
            self.tracker.warm(header[HDR_PID], header[0] + self._offset_ns)
            return
        if header[HDR_DIRECTION] == DIR_INGRESS:
            if header[HDR_PROTO] == PROTO_UDP:
                start = offset + EVENT_HDR_SIZE
                cap_len = header[HDR_CAP_LEN]
                if cap_len > length - EVENT_HDR_SIZE:
                    cap_len = length - EVENT_HDR_SIZE
                event = self.tracker.udp_answer(header[0] + self._offset_ns, header[1],
                                                area[start:start + cap_len], header[HDR_PAYLOAD_LEN])
                if event is not None:
                    self._events.append(event)
                return
        else:
            self._in_order(header[HDR_PID], header[HDR_QSEQ])
        events = self.tracker.packet(self._packet(header, area, offset + EVENT_HDR_SIZE, length - EVENT_HDR_SIZE))
        if events:
            self._events.extend(events)

    def _pair(self, header: tuple[Any, ...], area: RingArea, offset: int, length: int) -> None:
        """A kernel-paired UDP query + answer: one event. The flood's hot path: an exchange seen
        before (same socket, server, question and answer but for the id) only copies its event."""
        if length < PAIR_QUERY_START:
            raise ValueError("pair record shorter than its header")
        (ts, cookie, pid, tid, _seq, qseq, saddr, daddr, sport, dport, payload_len, cap_len,
         family, _proto, _direction, _kind, comm, _reserved) = header
        if self._next_qseq.get(pid) == qseq:
            self._next_qseq[pid] = qseq + 1
        else:
            self._in_order(pid, qseq)
        query_ts, query_len = PAIR_EXT.unpack_from(area, offset + EVENT_HDR_SIZE)
        if query_len > DNS_QUERY_CAPTURE or PAIR_QUERY_START + query_len > length:
            raise ValueError("pair record shorter than its query")
        query_start = offset + PAIR_QUERY_START
        answer_start = query_start + query_len
        if cap_len > length - PAIR_QUERY_START - query_len:
            cap_len = length - PAIR_QUERY_START - query_len
        offset_ns = self._offset_ns
        self.order["pairs"] += 1
        tracker = self.tracker
        msg_id = (area[query_start] << 8) | area[query_start + 1]
        # the record describes the answer: its source is the server, its destination the client
        flow_key = (cookie, pid, saddr, sport, dport, area[query_start + 2:query_start + query_len], query_len,
                    area[answer_start + 2:answer_start + cap_len], payload_len)
        event = tracker.repeated_pair(flow_key, query_ts + offset_ns, ts + offset_ns, pid, tid, msg_id, cookie, dport)
        if event is not None:
            self._events.append(event)
            return
        addresses = self._ipv4 if family == 4 else self._ipv6
        self._events.extend(tracker.pair(
            query_ts + offset_ns, ts + offset_ns, cookie, pid, tid, self._comms[comm], family,
            addresses[daddr], dport, addresses[saddr], sport,
            area[query_start:query_start + query_len], query_len,
            area[answer_start:answer_start + cap_len], payload_len, flow_key))

    # --- send order ------------------------------------------------------------------------

    def _in_order(self, pid: int, qseq: int) -> None:
        """Before a query numbered ``qseq`` of ``pid`` is handled: earlier ones still in the kernel
        map (sent before, unanswered so far) are taken out first, so flags see send order."""
        next_qseq = self._next_qseq
        expected = next_qseq.get(pid, 0)  # the kernel numbers a process's queries from 0
        if qseq != expected:
            if qseq < expected:
                if expected - qseq < 1 << 20:
                    return  # an older query arriving late (taken by a gap sweep that raced its answer)
            elif self._gap_budget_ns > 0:
                started = time.perf_counter_ns()
                self.order["gap_sweeps"] += 1
                self._sweep(pid=pid, below_qseq=qseq)
                self._gap_budget_ns -= time.perf_counter_ns() - started
            else:
                self.order["gap_sweeps_skipped"] += 1
        if len(next_qseq) >= 65536:
            next_qseq.clear()  # bounded; forgetting only loses ordering hints
        next_qseq[pid] = qseq + 1

    def _kernel_queries(self, max_ts: int | None = None, pid: int | None = None, below_qseq: int = 0,
                        take: bool = False) -> list[Packet]:
        """Queries held in the kernel map: those sent at or before ``max_ts`` (monotonic ns), or
        those of ``pid`` numbered below ``below_qseq``, or all. ``take`` deletes them from the map
        (one that its answer took meanwhile is left out: its pair record follows in the ring).
        Each packet's ``seq`` holds the query's send sequence number."""
        inflight = self.inflight_map
        if inflight is None:
            return []
        count = inflight.read()
        values, keys = inflight.values, inflight.keys
        value_size, key_size = inflight.value_size, inflight.key_size
        head = QUERY_ENTRY_HEAD.unpack_from
        view = memoryview(values)
        packets = []
        for index in range(count):
            offset = index * value_size
            ts, entry_pid, _tid, qseq = head(values, offset)
            if max_ts is not None and ts > max_ts:
                continue
            if pid is not None and (entry_pid != pid or qseq >= below_qseq):
                continue
            if take and not inflight.delete(index):
                continue
            (ts, entry_pid, tid, qseq, sport, dport, saddr, daddr, length, family,
             comm) = QUERY_ENTRY.unpack_from(values, offset)
            length = min(length, DNS_QUERY_CAPTURE)
            cookie = QUERY_KEY.unpack_from(keys, index * key_size)[0]
            addresses = self._ipv4 if family == 4 else self._ipv6
            data_start = offset + QUERY_ENTRY_DATA
            packets.append(Packet(ts + self._offset_ns, cookie, entry_pid, tid, self._comms[comm], family, PROTO_UDP,
                                  DIR_EGRESS, addresses[saddr], addresses[daddr], sport, dport, length, qseq,
                                  bytes(view[data_start:data_start + length])))
        return packets

    def _sweep(self, max_ts: int | None = None, pid: int | None = None, below_qseq: int = 0) -> None:
        """Take kernel-held queries into the tracker (in send order): they become user-space
        in-flight queries; their answers, if any come, arrive as packets."""
        taken = self._kernel_queries(max_ts, pid, below_qseq, take=True)
        self.order["swept"] += len(taken)
        taken.sort(key=lambda packet: packet.ts)
        next_qseq = self._next_qseq
        for packet in taken:
            expected = next_qseq.get(packet.pid)
            if expected is None or expected <= packet.seq:
                next_qseq[packet.pid] = packet.seq + 1
            packet.seq = 0  # UDP: no TCP sequence number
            self.tracker.packet(packet)  # a query: no event until its answer or timeout

    def poll(self) -> list[Event]:
        if self.reader is None:
            return []
        self._follow_clock()
        self._events = []
        # kernel.ringbuf's Decoder also allows a bytearray area; the reader hands only its mmap
        self.reader.drain_with(cast("Decoder[None]", self._record))
        events, self._events = self._events, []
        return events

    def flush(self) -> list[Event]:
        """At shutdown: the rest of the ring buffer (one poll stops after DEFAULT_DRAIN_LIMIT records)."""
        events: list[Event] = []
        for _ in range(FLUSH_MAX_DRAINS):  # bounded: the kernel keeps writing while we read
            if self.reader is None:
                break
            read_before = self.reader.records + self.reader.malformed
            events.extend(self.poll())
            if self.reader.records + self.reader.malformed == read_before:
                break
        self._sweep()  # queries still unanswered: in flight in user space
        return events

    def tick(self, now_ns: int) -> list[Event]:
        self._gap_budget_ns = GAP_SWEEP_BUDGET_NS
        self._follow_clock()
        self._sweep(max_ts=self.clock.now_ktime_ns() - SWEEP_AGE_NS)
        return self.tracker.expire(now_ns)

    def pending(self) -> list[Event]:
        """In-flight queries, user space's and the kernel map's, as unanswered-so-far attempts."""
        now = time.monotonic_ns()
        read_at, kernel_held = self._pending_cache
        if now - read_at >= PENDING_CACHE_NS:
            kernel_held = []
            for packet in self._kernel_queries():
                event = self.tracker.query_event(packet)
                if event is not None:
                    kernel_held.append(event)
            self._pending_cache = (now, kernel_held)
        return self.tracker.pending() + kernel_held

    def live_stats(self) -> dict[str, object]:
        counts = self.tracker.counts()
        kernel = self.kernel_counters() if self.bpf is not None else {}  # none before start
        records, records_malformed = (self.reader.records, self.reader.malformed) if self.reader else (0, 0)
        # malformed: the tracker's messages, the kernel's packets and the ring's records
        counts["malformed"] += records_malformed + (kernel.pop("kernel_malformed") if kernel else 0)
        stats: dict[str, object] = dict(counts)
        stats["servers"] = self.tracker.server_counts()
        stats.update(kernel)
        stats["records"] = records
        stats.update(self.order)
        if kernel:
            held = self.inflight_map.read() if self.inflight_map is not None else 0
            stats["kernel_inflight"] = held
            # what went in and never came out by a known way (0 unless the kernel map lost entries)
            stats["kernel_inflight_evicted"] = max(0, kernel["kernel_inflight_added"] - kernel["kernel_paired"]
                                                   - kernel["kernel_resent"] - self.order["swept"] - held)
        stats["resolv_conf_reads"] = self.resolv_cache.reads
        return stats
