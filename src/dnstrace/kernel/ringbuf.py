"""Read a BPF ring buffer map straight from its shared memory: no per-event callback.

Every signal's kernel events come through here (gai, dns, tcp, drops).

The kernel's ring buffer ABI (as libbpf uses it): the map fd is mmapped as one
read-write page holding the consumer position, then, read-only, one page holding
the producer position followed by the data area mapped twice in a row (so a record
that wraps around the end is still contiguous). Each record is an 8-byte header
(32-bit length with BUSY and DISCARD flags, 32-bit page offset) then the payload,
padded to 8 bytes. Records still BUSY are being written: reading stops there, so a
half-made record is never decoded. The map fd itself is pollable (EPOLLIN while
data waits), so it goes straight into the runner's epoll.

Two ways to drain:

* ``drain(record)`` — fixed-size layouts: one ``struct.Struct.unpack_from`` per
  record on the mapped memory, a tuple out (about a microsecond in Python).
* ``drain_sized(layouts)`` — a few fixed sizes (gai: short and full-size records):
  each record is unpacked with the layout of its length. Runs of records of the
  first layout's size, the common case under load, are unpacked in one
  ``iter_unpack`` call over the mapped memory after one check of their headers,
  instead of a Python loop step per record.
* ``drain_with(decode)`` — variable-length records: ``decode(area, offset,
  length)`` is called per record on the mapped memory and returns the decoded
  object, or None when it has nothing to hand back (it may have consumed the record
  itself); it raises ``ValueError``/``struct.error`` for a malformed record, which
  is skipped and counted. ``decode`` must copy what it keeps (``unpack_from`` and
  slicing do): the space is handed back to the kernel when the drain ends.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from typing import Any, TypeVar

RINGBUF_BUSY_BIT = 1 << 31
RINGBUF_DISCARD_BIT = 1 << 30
RINGBUF_HDR_SZ = 8
_LENGTH_MASK = ~(RINGBUF_BUSY_BIT | RINGBUF_DISCARD_BIT) & 0xFFFFFFFF
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
DEFAULT_DRAIN_LIMIT = 65536  # records per drain: bounds one poll's latency and memory

T = TypeVar("T")
# The mapped areas (tests hand in bytearrays laid out the same way).
Area = mmap.mmap | bytearray
Decoder = Callable[[Area, int, int], "T | None"]
Record = tuple[Any, ...]  # what struct.Struct.unpack gives


def map_data_size(map_fd: int) -> int:
    """max_entries of a ring buffer map (its data size in bytes), from /proc/self/fdinfo."""
    with open(f"/proc/self/fdinfo/{map_fd}") as info:
        for line in info:
            if line.startswith("max_entries:"):
                return int(line.split()[1])
    raise OSError(f"fd {map_fd} does not look like a BPF map")


class RingBufReader:
    """Drains the records of one ring buffer map; ``fd`` is what to register with epoll."""

    def __init__(self, map_fd: int, data_size: int | None = None):
        self.fd = map_fd
        self.data_size = data_size or map_data_size(map_fd)
        if self.data_size & (self.data_size - 1):
            raise ValueError(f"ring buffer size {self.data_size} is not a power of two")
        page = mmap.PAGESIZE
        self._page = page
        self._mask = self.data_size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * self.data_size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)
        self.records = 0    # records read (and decoded)
        self.malformed = 0  # records whose length does not fit the layout, or the decoder rejected

    def drain(self, record: struct.Struct, limit: int = DEFAULT_DRAIN_LIMIT) -> list[Record]:
        """Fixed-size layout: every complete record waiting (up to ``limit``), each as a tuple."""
        return drain_fixed(self, self._producer, self._consumer, record, limit)

    def drain_sized(self, layouts: dict[int, struct.Struct], limit: int = DEFAULT_DRAIN_LIMIT) -> list[Record]:
        """Records of the lengths in ``layouts`` (the first one the common size), each as a tuple."""
        return drain_sized(self, self._producer, self._consumer, layouts, limit)

    def drain_with(self, decode: Decoder[T], limit: int = DEFAULT_DRAIN_LIMIT) -> list[T]:
        """Variable-length records: ``decode(area, offset, length)`` per record, Nones left out."""
        return drain_variable(self, self._producer, self._consumer, decode, limit)

    def close(self) -> None:
        for area in (self._consumer, self._producer):
            try:
                area.close()
            except (BufferError, ValueError):
                pass


# The two loops below are the agent's hottest code: everything is bound to locals.
# They work on any two buffers laid out like the mmapped areas, so they are unit-testable.


def drain_fixed(reader: RingBufReader, producer_area: Area, consumer_area: Area, record: struct.Struct,
                limit: int) -> list[Record]:
    consumer_pos = _U64.unpack_from(consumer_area, 0)[0]
    producer_pos = _U64.unpack_from(producer_area, 0)[0]
    base = reader._page
    mask = reader._mask
    header_of = _U32.unpack_from
    unpack = record.unpack_from
    size = record.size
    out: list[Record] = []
    append = out.append
    count = 0
    malformed = 0
    while consumer_pos < producer_pos and count < limit:
        offset = base + (consumer_pos & mask)
        header = header_of(producer_area, offset)[0]
        if header & RINGBUF_BUSY_BIT:
            break  # still being written by the kernel
        length = header & _LENGTH_MASK
        if not header & RINGBUF_DISCARD_BIT:
            if length == size:
                append(unpack(producer_area, offset + RINGBUF_HDR_SZ))
                count += 1
            else:
                malformed += 1
        consumer_pos += (length + RINGBUF_HDR_SZ + 7) & ~7
    _U64.pack_into(consumer_area, 0, consumer_pos)
    reader.records += count
    reader.malformed += malformed
    return out


_RUN_LAYOUTS: dict[tuple[int, str], struct.Struct] = {}


def _run_layout(length: int, layout: struct.Struct) -> struct.Struct:
    """``layout`` preceded by the record header and followed by its padding: one ring slot."""
    key = (length, layout.format)
    run = _RUN_LAYOUTS.get(key)
    if run is None:
        body = layout.format.lstrip("<=")
        slot = (length + RINGBUF_HDR_SZ + 7) & ~7
        run = _RUN_LAYOUTS[key] = struct.Struct(f"<{RINGBUF_HDR_SZ}x{body}{slot - RINGBUF_HDR_SZ - length}x")
    return run


def drain_sized(reader: RingBufReader, producer_area: Area, consumer_area: Area, layouts: dict[int, struct.Struct],
                limit: int) -> list[Record]:
    consumer_pos = _U64.unpack_from(consumer_area, 0)[0]
    producer_pos = _U64.unpack_from(producer_area, 0)[0]
    base = reader._page
    mask = reader._mask
    header_of = _U32.unpack_from
    run_length, run_record = next(iter(layouts.items()))
    if run_record.size != run_length:
        raise ValueError(f"layout of {run_record.size} bytes given for {run_length}-byte records")
    run = _run_layout(run_length, run_record)
    stride = run.size
    out: list[Record] = []
    count = 0
    malformed = 0
    with memoryview(producer_area) as area:
        while consumer_pos < producer_pos and count < limit:
            offset = base + (consumer_pos & mask)
            # A run: the headers every `stride` bytes from here, while they all say "complete
            # record of run_length bytes". The data area is mapped twice, so it is contiguous.
            slots = min((producer_pos - consumer_pos) // stride, limit - count)
            if slots > 1:
                with area[offset:offset + slots * stride] as span, span.cast("I") as words:
                    headers = words[::stride // 4].tolist()
                if headers[0] == run_length:
                    if headers.count(run_length) != slots:
                        slots = next(i for i, h in enumerate(headers) if h != run_length)
                    with area[offset:offset + slots * stride] as span:
                        out.extend(run.iter_unpack(span))
                    count += slots
                    consumer_pos += slots * stride
                    continue
            header = header_of(area, offset)[0]
            if header & RINGBUF_BUSY_BIT:
                break  # still being written by the kernel
            length = header & _LENGTH_MASK
            if not header & RINGBUF_DISCARD_BIT:
                layout = layouts.get(length)
                if layout is not None:
                    out.append(layout.unpack_from(area, offset + RINGBUF_HDR_SZ))
                    count += 1
                else:
                    malformed += 1
            consumer_pos += (length + RINGBUF_HDR_SZ + 7) & ~7
    _U64.pack_into(consumer_area, 0, consumer_pos)
    reader.records += count
    reader.malformed += malformed
    return out


def drain_variable(reader: RingBufReader, producer_area: Area, consumer_area: Area, decode: Decoder[T],
                   limit: int) -> list[T]:
    consumer_pos = _U64.unpack_from(consumer_area, 0)[0]
    producer_pos = _U64.unpack_from(producer_area, 0)[0]
    base = reader._page
    mask = reader._mask
    header_of = _U32.unpack_from
    out: list[T] = []
    append = out.append
    seen = 0
    bad = 0
    while consumer_pos < producer_pos and seen < limit:
        offset = base + (consumer_pos & mask)
        header = header_of(producer_area, offset)[0]
        if header & RINGBUF_BUSY_BIT:
            break
        length = header & _LENGTH_MASK
        if not header & RINGBUF_DISCARD_BIT:
            seen += 1
            try:
                item = decode(producer_area, offset + RINGBUF_HDR_SZ, length)
            except (struct.error, ValueError, IndexError):
                bad += 1  # a bad record must not wedge the buffer: it is skipped and counted
            else:
                if item is not None:
                    append(item)
        consumer_pos += (length + RINGBUF_HDR_SZ + 7) & ~7
    _U64.pack_into(consumer_area, 0, consumer_pos)
    reader.records += seen - bad
    reader.malformed += bad
    return out
