"""The agent's bounded on-disk spool: every batch is written here first, shipped from here in order.

Records are the shipper's batch envelopes as msgpack (the same bytes the collector
decodes), framed as ``length (4 bytes) | crc32 (4 bytes) | msgpack`` in append-only
segment files ``<16 hex digits>.spool``. The sender reads from the oldest unacked
record; acknowledged segments are deleted. When the size limit would be passed, the
oldest segments are evicted first and counted (batches, events, bytes): nothing is
lost while the spool has room. After a crash the spool is rebuilt from its files; a
torn last record is cut off, and records delivered but not yet deleted are replayed
(the collector drops them as duplicates by their batch key).

Durability: appends are written to the segment file at once (so a crash of the agent
process loses nothing: the data is in the kernel's page cache) and made durable by a
group ``fsync`` at most once per ``fsync_interval_s`` (default 1 s; the directory too
when a segment was created), plus one on close. A power loss or kernel crash can
therefore lose up to about the last second of batches; an fsync per batch would cost
a disk flush per batch on the agent's event path for little gain, since events of
that last second were still in the kernel ring buffers a moment earlier anyway.

Full or failing disks: every write is checked. A write that fails (ENOSPC, EDQUOT,
EROFS, EIO) or comes up short is cut back off the segment, so no torn record is ever
booked, and the batch is counted in ``dropped_batches``/``dropped_events``; the spool
is then ``degraded`` and tries again with the next batch, so it recovers by itself
when space returns. A spool directory that cannot be written at start-up is refused
(``EnvironmentProblem``: the agent exits 3 with one line).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from dnstrace.errors import EnvironmentProblem

_FRAME = struct.Struct(">II")  # length, crc32
SEGMENT_SUFFIX = ".spool"


@dataclass
class SpoolRecord:
    schema_version: int
    host_id: str
    boot_id: str
    instance: int
    seq: int
    event_count: int
    events: bytes

    def pack(self) -> bytes:
        return msgpack.packb([self.schema_version, self.host_id, self.boot_id, self.instance, self.seq,
                              self.event_count, self.events], use_bin_type=True)

    @classmethod
    def unpack(cls, data: bytes) -> SpoolRecord:
        fields = msgpack.unpackb(data, raw=False)
        if not isinstance(fields, list) or len(fields) != 7:
            raise ValueError("not a spool record")
        return cls(*fields)


@dataclass
class _Entry:
    offset: int
    size: int  # framed size
    event_count: int


@dataclass
class _Segment:
    seg_id: int
    path: str
    entries: list[_Entry] = field(default_factory=list)
    size: int = 0


class Spool:
    """Thread-safe: the agent thread appends, the sender thread reads and acks.

    A position is ``(segment id, index in segment)``; positions only grow.
    """

    def __init__(self, directory: str, max_bytes: int, segment_bytes: int | None = None,
                 fsync_interval_s: float = 1.0):
        self.directory = directory
        self.fsync_interval_s = fsync_interval_s
        self._last_fsync = time.monotonic()
        self._unsynced = False
        self._dir_unsynced = False
        self.max_bytes = max_bytes
        # At least 16 segments per spool so an eviction drops a sixteenth, not everything (4 KiB floor).
        self.segment_bytes = segment_bytes or max(4096, min(64 << 20, max_bytes // 16))
        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)
        self._segments: deque[_Segment] = deque()
        self._head_index = 0  # first unacked entry in the first segment
        self._write_fd: int | None = None
        self._total_bytes = 0
        self._next_seg_id = 1  # segment ids (and so positions) only grow, even across evictions
        self.counters = {"appended_batches": 0, "appended_events": 0, "acked_batches": 0, "acked_events": 0,
                         "evicted_batches": 0, "evicted_events": 0, "evicted_bytes": 0, "recovered_batches": 0,
                         "torn_records": 0, "oversized_batches": 0, "fsyncs": 0, "dropped_batches": 0,
                         "dropped_events": 0, "write_errors": 0, "corrupt_records": 0}
        self.degraded: str | None = None  # why the last write failed, until one succeeds again
        # on_change(what, details): "degraded" / "recovered" / "evicted"
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None
        try:
            os.makedirs(directory, exist_ok=True)
            self._probe_writable()
            self._recover()
        except OSError as err:
            raise EnvironmentProblem(f"spool directory {directory} is not usable: {err.strerror}",
                                     hint="set agent.spool_dir (--spool DIR) to a writable directory with "
                                          "free space") from None

    def _probe_writable(self) -> None:
        probe = os.path.join(self.directory, ".write-probe")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, b"\0" * 512) != 512:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)
            try:
                os.unlink(probe)
            except OSError:
                pass

    def _notify(self, what: str, **details) -> None:
        if self.on_change is not None:
            try:
                self.on_change(what, details)
            except Exception:  # a reporting problem must not stop spooling
                pass

    # --- start-up ---------------------------------------------------------------
    def _recover(self) -> None:
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(SEGMENT_SUFFIX))
        for name in names:
            try:
                seg_id = int(name[: -len(SEGMENT_SUFFIX)], 16)
            except ValueError:
                continue
            segment = _Segment(seg_id, os.path.join(self.directory, name))
            with open(segment.path, "rb") as f:
                data = f.read()
            offset = 0
            while offset + _FRAME.size <= len(data):
                length, crc = _FRAME.unpack_from(data, offset)
                body = data[offset + _FRAME.size: offset + _FRAME.size + length]
                if len(body) != length or zlib.crc32(body) != crc:
                    break
                try:
                    record = SpoolRecord.unpack(body)
                except Exception:
                    break
                segment.entries.append(_Entry(offset, _FRAME.size + length, record.event_count))
                offset += _FRAME.size + length
            if offset != len(data):
                self.counters["torn_records"] += 1
                os.truncate(segment.path, offset)
            segment.size = offset
            if not segment.entries:
                os.unlink(segment.path)
                continue
            self._segments.append(segment)
            self._next_seg_id = seg_id + 1
            self._total_bytes += segment.size
            self.counters["recovered_batches"] += len(segment.entries)

    # --- writing ----------------------------------------------------------------
    def append(self, record: SpoolRecord) -> None:
        body = record.pack()
        framed = _FRAME.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if len(framed) > self.max_bytes:
                self.counters["oversized_batches"] += 1
                self.counters["evicted_batches"] += 1
                self.counters["evicted_events"] += record.event_count
                self.counters["evicted_bytes"] += len(framed)
                return
            evicted = 0
            while self._segments and self._total_bytes + len(framed) > self.max_bytes:
                evicted += self._evict_oldest()
            if evicted:
                self._notify("evicted", batches=evicted)
            try:
                segment = self._writable_segment(len(framed))
                offset = segment.size
                self._write_all(framed)
            except OSError as err:
                self._write_failed(record, err)
                return
            segment.entries.append(_Entry(offset, len(framed), record.event_count))
            segment.size += len(framed)
            self._total_bytes += len(framed)
            self.counters["appended_batches"] += 1
            self.counters["appended_events"] += record.event_count
            self._unsynced = True
            synced = True
            if time.monotonic() - self._last_fsync >= self.fsync_interval_s:
                try:
                    self._sync_locked()
                except OSError as err:  # the data is written (page cache); durability is what failed
                    synced = False
                    self.counters["write_errors"] += 1
                    self._set_degraded(f"fsync failed: {err.strerror}")
            if self.degraded is not None and synced:
                self.degraded = None
                self._notify("recovered", dropped_batches=self.counters["dropped_batches"])
            self._data.notify_all()

    def _write_all(self, framed: bytes) -> None:
        view = memoryview(framed)
        assert self._write_fd is not None  # called with the spool file open
        while view:
            written = os.write(self._write_fd, view)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]

    def _write_failed(self, record: SpoolRecord, err: OSError) -> None:
        """Undo a partial write (no torn record), count the batch as dropped, retry with the next one."""
        self.counters["write_errors"] += 1
        self.counters["dropped_batches"] += 1
        self.counters["dropped_events"] += record.event_count
        last = self._segments[-1] if self._segments else None
        if self._write_fd is not None:
            try:
                os.ftruncate(self._write_fd, last.size if last is not None else 0)
            except OSError:
                pass  # the torn tail is cut off at the next start (crc), and this segment is written no more
            try:
                os.close(self._write_fd)
            except OSError:
                pass
            self._write_fd = None
        if last is not None and not last.entries:
            self._segments.pop()
            try:
                os.unlink(last.path)
            except OSError:
                pass
        self._set_degraded(f"{err.strerror or err}")

    def _set_degraded(self, why: str) -> None:
        if self.degraded is None:
            self._notify("degraded", reason=why)
        self.degraded = why

    def sync(self) -> None:
        """Make every appended record durable now."""
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        self._last_fsync = time.monotonic()
        if self._unsynced and self._write_fd is not None:
            os.fsync(self._write_fd)
            self.counters["fsyncs"] += 1
        self._unsynced = False
        if self._dir_unsynced:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._dir_unsynced = False

    def _writable_segment(self, need: int) -> _Segment:
        last = self._segments[-1] if self._segments else None
        if last is not None and self._write_fd is not None and last.size + need <= self.segment_bytes:
            return last
        if self._write_fd is not None:
            if self._unsynced:
                os.fsync(self._write_fd)  # the finished segment is durable before writing moves on
                self.counters["fsyncs"] += 1
                self._unsynced = False
            os.close(self._write_fd)
            self._write_fd = None
        seg_id = self._next_seg_id
        self._next_seg_id += 1
        path = os.path.join(self.directory, f"{seg_id:016x}{SEGMENT_SUFFIX}")
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._dir_unsynced = True
        segment = _Segment(seg_id, path)
        self._segments.append(segment)
        if last is not None and self._head_index >= len(last.entries) and len(self._segments) == 2:
            self._drop_first()  # the previous segment was fully delivered
        return segment

    def _evict_oldest(self) -> int:
        segment = self._segments[0]
        undelivered = segment.entries[self._head_index:]
        self.counters["evicted_batches"] += len(undelivered)
        self.counters["evicted_events"] += sum(e.event_count for e in undelivered)
        self.counters["evicted_bytes"] += sum(e.size for e in undelivered)
        if len(self._segments) == 1 and self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        self._drop_first()
        return len(undelivered)

    def _drop_first(self) -> None:
        segment = self._segments.popleft()
        self._total_bytes -= segment.size
        self._head_index = 0
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            pass

    # --- reading ------------------------------------------------------------------
    def first_unacked(self) -> tuple[int, int] | None:
        with self._lock:
            return self._first_unacked_locked()

    def _first_unacked_locked(self):
        for i, segment in enumerate(self._segments):
            index = self._head_index if i == 0 else 0
            if index < len(segment.entries):
                return (segment.seg_id, index)
        return None

    def read(self, position: tuple[int, int] | None, max_records: int,
             timeout_s: float = 0.0) -> list[tuple[tuple[int, int], SpoolRecord]]:
        """Records at ``position`` or later (``None`` = the oldest unacked), waiting up to ``timeout_s``."""
        with self._lock:
            found = self._locate(position)
            if not found and timeout_s > 0:
                self._data.wait(timeout_s)
                found = self._locate(position)
            wanted = found[:max_records]
        out = []
        for (seg_id, index), path, entry in wanted:
            try:
                with open(path, "rb") as f:
                    f.seek(entry.offset)
                    framed = f.read(entry.size)
            except FileNotFoundError:
                continue  # evicted meanwhile
            try:
                length, crc = _FRAME.unpack_from(framed)
                body = framed[_FRAME.size:]
                if len(body) != length or zlib.crc32(body) != crc:
                    raise ValueError("crc mismatch")
                out.append(((seg_id, index), SpoolRecord.unpack(body)))
            except (ValueError, struct.error, msgpack.ExtraData, msgpack.UnpackException) as err:
                if not out:  # acking it must not ack records before it that were not delivered yet
                    self._corrupt((seg_id, index), entry, err)
                break
        return out

    def _corrupt(self, position: tuple[int, int], entry: _Entry, err: Exception) -> None:
        """A record that cannot be read back (disk error): counted as dropped and skipped, never resent."""
        with self._lock:
            self.counters["corrupt_records"] += 1
            self.counters["dropped_batches"] += 1
            self.counters["dropped_events"] += entry.event_count
        self._notify("corrupt", position=list(position), error=str(err))
        self.ack(position)

    def _locate(self, position):
        first = self._first_unacked_locked()
        if first is None:
            return []
        if position is None or position < first:
            position = first
        found = []
        for i, segment in enumerate(self._segments):
            if segment.seg_id < position[0]:
                continue
            start = position[1] if segment.seg_id == position[0] else 0
            if i == 0:
                start = max(start, self._head_index)
            for index in range(start, len(segment.entries)):
                found.append(((segment.seg_id, index), segment.path, segment.entries[index]))
                if len(found) >= 64:
                    return found
        return found

    def ack(self, position: tuple[int, int]) -> None:
        """The record at ``position`` (and everything before it) reached the collector."""
        with self._lock:
            while self._segments:
                segment = self._segments[0]
                if segment.seg_id > position[0]:
                    break
                end = len(segment.entries) if segment.seg_id < position[0] else min(position[1] + 1,
                                                                                    len(segment.entries))
                delivered = segment.entries[self._head_index:end]
                self.counters["acked_batches"] += len(delivered)
                self.counters["acked_events"] += sum(e.event_count for e in delivered)
                self._head_index = max(self._head_index, end)
                fully = self._head_index >= len(segment.entries)
                is_writing = len(self._segments) == 1 and self._write_fd is not None
                if fully and not is_writing:
                    self._drop_first()
                    continue
                break

    # --- state --------------------------------------------------------------------
    def pending(self) -> tuple[int, int]:
        """(batches, events) not yet acknowledged."""
        with self._lock:
            batches = events = 0
            for i, segment in enumerate(self._segments):
                entries = segment.entries[self._head_index:] if i == 0 else segment.entries
                batches += len(entries)
                events += sum(e.event_count for e in entries)
            return batches, events

    def stats(self) -> dict:
        batches, events = self.pending()
        with self._lock:
            return dict(self.counters, pending_batches=batches, pending_events=events, bytes=self._total_bytes,
                        segments=len(self._segments), max_bytes=self.max_bytes, degraded=self.degraded or "")

    def close(self) -> None:
        with self._lock:
            if self._write_fd is not None:
                try:
                    self._sync_locked()
                except OSError:
                    self.counters["write_errors"] += 1
                os.close(self._write_fd)
                self._write_fd = None
            self._data.notify_all()
