"""The ring buffer parser on recorded memory: variable-length records, flags, wrap-around, limits."""

from __future__ import annotations

import socket
import struct

from dnstrace.kernel.ringbuf import RINGBUF_BUSY_BIT, RINGBUF_DISCARD_BIT, drain_fixed, drain_variable
from dnstrace.signals.dns.source import EVENT_HDR, DnsWireSource
from support import fake_ring, fake_ring_reader


def as_bytes(area, offset, length):
    return bytes(area[offset:offset + length])


def test_variable_lengths_padding_discard_and_busy():
    payloads = [b"a", b"bcdefghij", b"x" * 17, b"discarded", b"k" * 8, b"busy"]
    flags = [0, 0, 0, RINGBUF_DISCARD_BIT, 0, RINGBUF_BUSY_BIT]
    producer, consumer, end = fake_ring(list(zip(flags, payloads, strict=False)))
    rb = fake_ring_reader(1024)
    assert drain_variable(rb, producer, consumer, as_bytes, limit=100) == [b"a", b"bcdefghij", b"x" * 17, b"k" * 8]
    assert rb.records == 4 and rb.malformed == 0
    assert struct.unpack_from("<Q", consumer)[0] < end  # stopped before the busy record
    assert drain_variable(rb, producer, consumer, as_bytes, limit=100) == []


def test_wrapping_record_is_contiguous_and_limit_resumes():
    records = [(0, bytes([n]) * (40 + n)) for n in range(6)]
    producer, consumer, end = fake_ring(records, data_size=512, start_pos=512 * 5 - 100)
    rb = fake_ring_reader(512)
    first = drain_variable(rb, producer, consumer, as_bytes, limit=2)
    rest = drain_variable(rb, producer, consumer, as_bytes, limit=100)
    assert first + rest == [payload for _, payload in records]
    assert struct.unpack_from("<Q", consumer)[0] == end


def test_decoder_errors_are_counted_not_fatal_and_nones_left_out():
    def picky(area, offset, length):
        if length == 3:
            raise struct.error("too short for the layout")
        if length == 4:
            raise ValueError("bad field")
        if length == 5:
            return None  # read, nothing to hand back
        return length

    producer, consumer, end = fake_ring([(0, b"abc"), (0, b"abcd"), (0, b"abcde"), (0, b"abcdefg")])
    rb = fake_ring_reader(1024)
    assert drain_variable(rb, producer, consumer, picky, limit=100) == [7]
    assert rb.malformed == 2 and rb.records == 2 and struct.unpack_from("<Q", consumer)[0] == end


def test_fixed_layout_counts_wrong_sizes():
    layout = struct.Struct("<QI")
    producer, consumer, _ = fake_ring([(0, layout.pack(1, 2)), (0, b"short"), (0, layout.pack(3, 4))])
    rb = fake_ring_reader(1024)
    assert drain_fixed(rb, producer, consumer, layout, limit=100) == [(1, 2), (3, 4)]
    assert rb.malformed == 1


def dns_record(payload: bytes, family=4, direction=0, cap_len=None) -> bytes:
    if family == 4:
        saddr, daddr = socket.inet_aton("10.0.0.2") + bytes(12), socket.inet_aton("10.0.0.53") + bytes(12)
    else:
        saddr, daddr = socket.inet_pton(socket.AF_INET6, "fd00::2"), socket.inet_pton(socket.AF_INET6, "fd00::35")
    header = EVENT_HDR.pack(1_000, 77, 4711, 4712, 9, 0, saddr, daddr, 40000, 53, len(payload),
                            len(payload) if cap_len is None else cap_len, family, 17, direction, 0,
                            b"curl" + bytes(12), 0)
    return header + payload


def test_dns_records_decode_from_the_ring():
    source = DnsWireSource(ports=[53])
    source._offset_ns = 5
    # cap_len larger than the record (a lying header) is clipped to what the record holds
    records = [(0, dns_record(b"\x12\x34query")), (0, dns_record(b"v6", family=6, cap_len=200)), (0, b"tiny")]
    producer, consumer, _ = fake_ring(records)
    rb = fake_ring_reader(1024)
    packets = drain_variable(rb, producer, consumer, source.decode, limit=100)
    assert rb.malformed == 1  # the record shorter than a header
    first, second = packets
    assert (first.ts, first.cookie, first.pid, first.tid, first.comm) == (1_005, 77, 4711, 4712, "curl")
    assert (first.saddr, first.daddr, first.sport, first.dport, first.seq) == ("10.0.0.2", "10.0.0.53", 40000, 53, 9)
    assert first.data == b"\x12\x34query" and isinstance(first.data, bytes)
    assert (second.saddr, second.daddr, second.data) == ("fd00::2", "fd00::35", b"v6")
