"""Attach a loaded BPF program as a uprobe or uretprobe with a cookie, through a BPF link.

bcc's ``attach_uprobe`` cannot pass a BPF cookie, and one program attached to many
libcs must tell them apart. So: open a uprobe perf event on (file, offset) with
``perf_event_open`` on the ``uprobe`` PMU, then ``BPF_LINK_CREATE`` (attach type
BPF_PERF_EVENT, Linux 5.15+) with the cookie, which the program reads with
``bpf_get_attach_cookie``. Closing the fds detaches; so does the agent's death.
The file is resolved to its inode when the event is opened, so a path through
``/proc/PID/root`` keeps working after that process exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import struct

# syscall numbers per architecture: (perf_event_open, bpf)
_SYSCALLS = {"x86_64": (298, 321), "aarch64": (241, 280)}
BPF_LINK_CREATE = 28
BPF_PERF_EVENT = 41  # enum bpf_attach_type
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7; the kernel accepts it from 5.x on
UPROBE_PMU_TYPE_FILE = "/sys/bus/event_source/devices/uprobe/type"
UPROBE_RETPROBE_FORMAT_FILE = "/sys/bus/event_source/devices/uprobe/format/retprobe"

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class UprobeError(OSError):
    """Opening or linking the probe failed; ``errno`` says why."""


def _syscall_numbers() -> tuple[int, int]:
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise UprobeError(0, f"uprobes with cookies are not supported on {machine} by dnstrace yet")
    return _SYSCALLS[machine]


def _uprobe_pmu() -> tuple[int, int]:
    """(PMU type, bit of the retprobe flag in attr.config)."""
    with open(UPROBE_PMU_TYPE_FILE) as f:
        pmu_type = int(f.read())
    with open(UPROBE_RETPROBE_FORMAT_FILE) as f:
        bit = int(f.read().strip().split(":")[1])  # "config:0"
    return pmu_type, bit


def _errno_error(what: str) -> UprobeError:
    err = ctypes.get_errno()
    return UprobeError(err, f"{what}: {os.strerror(err)}")


def open_uprobe_event(path: str, offset: int, retprobe: bool) -> int:
    """A perf event fd for a uprobe at ``offset`` bytes into the file ``path`` (system-wide)."""
    perf_event_open, _ = _syscall_numbers()
    pmu_type, retprobe_bit = _uprobe_pmu()
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
    config = (1 << retprobe_bit) if retprobe else 0
    # type, size, config, sample_period; then config1 (path) at 56 and config2 (offset) at 64.
    struct.pack_into("<IIQQ", attr, 0, pmu_type, PERF_ATTR_SIZE, config, 1)
    struct.pack_into("<QQ", attr, 56, ctypes.addressof(path_buf), offset)
    fd: int = _libc.syscall(perf_event_open, attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise _errno_error(f"perf_event_open(uprobe {path}+{offset:#x})")
    return fd


def link_create(prog_fd: int, perf_fd: int, cookie: int) -> int:
    _, bpf = _syscall_numbers()
    attr = ctypes.create_string_buffer(64)
    # prog_fd, target_fd, attach_type, flags, then perf_event.bpf_cookie at 16.
    struct.pack_into("<IIIIQ", attr, 0, prog_fd, perf_fd, BPF_PERF_EVENT, 0, cookie)
    fd: int = _libc.syscall(bpf, BPF_LINK_CREATE, attr, 64)
    if fd < 0:
        raise _errno_error("bpf(BPF_LINK_CREATE, perf_event)")
    return fd


class UprobeLink:
    """One attached uprobe/uretprobe; ``close()`` detaches it."""

    def __init__(self, prog_fd: int, path: str, offset: int, retprobe: bool, cookie: int):
        self.path = path
        self.offset = offset
        self.retprobe = retprobe
        self.perf_fd = open_uprobe_event(path, offset, retprobe)
        try:
            self.link_fd = link_create(prog_fd, self.perf_fd, cookie)
        except UprobeError:
            os.close(self.perf_fd)
            raise

    def close(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            os.close(self.perf_fd)
            self.link_fd = self.perf_fd = -1
