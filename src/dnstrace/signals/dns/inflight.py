"""Reading the kernel's map of in-flight DNS queries (``inflight`` in dns.bpf.c) without bcc's per-call allocations."""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

ENOTSUPP = 524  # the kernel's internal "operation not supported" (no name in errno)


class KernelInflight:
    """The kernel's in-flight query map, read with BPF_MAP_LOOKUP_BATCH into buffers allocated once
    (bcc's batch helpers allocate max_entries-sized buffers on every call)."""

    def __init__(self, table: Any, capacity: int):  # a bcc table (bcc has no types)
        from bcc.libbcc import lib  # bcc is imported lazily everywhere

        self.lib = lib
        self.fd = table.map_fd
        self.key_size = ctypes.sizeof(table.Key)
        self.value_size = ctypes.sizeof(table.Leaf)
        self.capacity = capacity
        self.keys = (ctypes.c_char * (self.key_size * capacity))()
        self.values = (ctypes.c_char * (self.value_size * capacity))()
        self.batch_ok = True

    def read(self) -> int:
        """Copy every entry into ``keys``/``values``; returns how many."""
        if not self.batch_ok:
            return self._read_one_by_one()
        total = 0
        batch, count = ctypes.c_uint(0), ctypes.c_uint(0)
        keys, values = ctypes.addressof(self.keys), ctypes.addressof(self.values)
        while total < self.capacity:
            count.value = self.capacity - total
            result = self.lib.bpf_lookup_batch(self.fd, ctypes.byref(batch) if total else None, ctypes.byref(batch),
                                               keys + self.key_size * total, values + self.value_size * total,
                                               ctypes.byref(count))
            error = ctypes.get_errno()
            total += count.value
            if result != 0:
                if error not in (errno.ENOENT, 0):
                    if total == 0 and error in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP):
                        self.batch_ok = False  # an old kernel: no batch operations
                        return self._read_one_by_one()
                    raise OSError(error, f"reading the DNS in-flight map: {os.strerror(error)}")
                break
            if count.value == 0:
                break
        return total

    def _read_one_by_one(self) -> int:
        key, next_key = ctypes.create_string_buffer(self.key_size), ctypes.create_string_buffer(self.key_size)
        total = 0
        start = None
        while total < self.capacity:
            if self.lib.bpf_get_next_key(self.fd, start, next_key) != 0:
                break
            ctypes.memmove(key, next_key, self.key_size)
            start = key
            if self.lib.bpf_lookup_elem(self.fd, key, ctypes.addressof(self.values) + self.value_size * total) == 0:
                ctypes.memmove(ctypes.addressof(self.keys) + self.key_size * total, key, self.key_size)
                total += 1
        return total

    def delete(self, index: int) -> bool:
        """Delete entry ``index`` of the last read; False when it was gone (its answer took it)."""
        return bool(self.lib.bpf_delete_elem(self.fd, ctypes.addressof(self.keys) + self.key_size * index) == 0)
