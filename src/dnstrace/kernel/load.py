"""Compile and attach dnstrace's BPF programs with bcc, and explain why when it cannot.

Everything that touches bcc or the kernel's BPF plumbing in a generic way lives
here: privilege and environment checks, compiling a signal's ``<name>.bpf.c``, attaching
cgroup programs through BPF links (so the kernel detaches them if the agent is
SIGKILLed). Kernel timestamps become unix time in ``dnstrace.kernel.clock``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path
from typing import Any

from dnstrace.errors import DnstraceError, EnvironmentProblem
from dnstrace.kernel import KERNEL_DIR

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# Capability bits (linux/capability.h).
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_privileges() -> None:
    """Root, or CAP_BPF + CAP_PERFMON (+ CAP_SYS_ADMIN for uprobes/cgroup attach on most kernels)."""
    if os.geteuid() == 0:
        return
    caps = effective_capabilities()
    if caps & (1 << CAP_SYS_ADMIN) or (caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)):
        return
    raise EnvironmentProblem(
        "dnstrace needs root (or CAP_BPF and CAP_PERFMON) to load BPF programs",
        hint="run it with sudo, or grant the capabilities to the agent's service",
    )


def import_bcc() -> Any:
    """The bcc module (untyped), or a clear error saying how to install it."""
    try:
        import bcc  # noqa: PLC0415 - heavy, optional until tracing starts
    except ImportError as err:
        raise EnvironmentProblem(
            f"the bcc Python module is not importable ({err})",
            hint="apt-get install python3-bpfcc and use a venv made with "
                 "'/usr/bin/python3 -m venv --system-site-packages' (bcc is not on PyPI)",
        ) from None
    return bcc


def tracefs_path(mount: bool = True) -> str:
    """Where tracefs is; mounts it at /sys/kernel/tracing when nothing is mounted and ``mount``."""
    for path in TRACEFS_CANDIDATES:
        if os.path.exists(os.path.join(path, "events")):
            return path
    if mount:
        try:
            os.makedirs(TRACEFS_CANDIDATES[0], exist_ok=True)
        except OSError as err:
            raise EnvironmentProblem(f"tracefs is not mounted and {TRACEFS_CANDIDATES[0]} cannot be created: "
                                     f"{err.strerror}", hint="mount -t tracefs tracefs /sys/kernel/tracing") from None
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.mount(b"tracefs", TRACEFS_CANDIDATES[0].encode(), b"tracefs", 0, None) == 0:
            return TRACEFS_CANDIDATES[0]
        errno = ctypes.get_errno()
        raise EnvironmentProblem(
            f"tracefs is not mounted and mounting it failed: {os.strerror(errno)}",
            hint="mount -t tracefs tracefs /sys/kernel/tracing",
        )
    raise EnvironmentProblem("tracefs is not mounted", hint="mount -t tracefs tracefs /sys/kernel/tracing")


def kernel_headers() -> tuple[str, str]:
    """(state, detail): state is ``matching``, ``fallback`` or ``missing``.

    bcc needs headers at /lib/modules/$(uname -r)/build. A link to another
    version's headers works for dnstrace because its programs read no kernel
    struct through headers (only tracepoint fields, uprobe args, packet bytes).
    """
    release = platform.release()
    build = Path(f"/lib/modules/{release}/build")
    if not build.exists():
        return "missing", f"no {build}"
    target = build.resolve()
    version_file = target / "include/config/kernel.release"
    built_for = version_file.read_text().strip() if version_file.exists() else target.name
    if release in str(target) or built_for == release:
        return "matching", str(target)
    return "fallback", f"{build} -> {target} (headers of {built_for}, kernel is {release})"


def require_kernel_headers() -> None:
    state, detail = kernel_headers()
    if state == "missing":
        raise EnvironmentProblem(
            f"kernel headers for {platform.release()} are missing ({detail})",
            hint="install linux-headers-$(uname -r), or run 'dnstrace doctor' for the fallback",
        )


def prepare() -> Any:
    """Every check before loading anything; returns the bcc module."""
    require_privileges()
    bcc = import_bcc()
    require_kernel_headers()
    tracefs_path(mount=True)
    return bcc


def load(path: Path, cflags: list[str] | None = None, text_prefix: str = "") -> Any:
    """Compile one signal's ``<name>.bpf.c`` with bcc. ``text_prefix`` lets callers add #defines.

    The program's own folder and this package's folder (``dnstrace.h``) are on the include path.
    Returns the ``bcc.BPF`` object.
    """
    bcc = prepare()
    name = path.name.removesuffix(".bpf.c")
    text = text_prefix + path.read_text()
    flags = [f"-I{path.parent}", f"-I{KERNEL_DIR}", "-Wno-macro-redefined", "-Wno-unused-command-line-argument"] + (cflags or [])
    try:
        return bcc.BPF(text=text, cflags=flags)
    except Exception as err:  # bcc raises plain Exception on compile/verifier errors
        raise DnstraceError(
            f"could not load the {name} BPF program: {err}",
            hint="run 'dnstrace doctor' to see which kernel features are missing",
        ) from None


# --- BPF links for cgroup programs ---------------------------------------------------

BPF_CGROUP_INET_INGRESS = 0
BPF_CGROUP_INET_EGRESS = 1

_libbpf: ctypes.CDLL | None = None


def _libbpf_handle() -> ctypes.CDLL:
    global _libbpf
    if _libbpf is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            _libbpf = ctypes.CDLL(name, use_errno=True)
        except OSError as err:
            raise EnvironmentProblem(f"libbpf is not loadable ({err})", hint="apt-get install libbpf1") from None
        _libbpf.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        _libbpf.bpf_link_create.restype = ctypes.c_int
    return _libbpf


def find_cgroup2_root() -> str:
    """The cgroup v2 mount point (``/sys/fs/cgroup`` or, on hybrid hosts, ``.../unified``)."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1]
    raise EnvironmentProblem("no cgroup v2 hierarchy is mounted",
                             hint="mount -t cgroup2 none /sys/fs/cgroup/unified")


class CgroupLink:
    """A BPF program attached to a cgroup through a BPF link: detached on close or process death."""

    def __init__(self, prog_fd: int, cgroup_path: str, attach_type: int):
        libbpf = _libbpf_handle()
        self.cgroup_fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
        link_fd = libbpf.bpf_link_create(prog_fd, self.cgroup_fd, attach_type, None)
        if link_fd < 0:
            os.close(self.cgroup_fd)
            err = -link_fd if link_fd < -1 else ctypes.get_errno()
            raise EnvironmentProblem(f"attaching a cgroup program to {cgroup_path} failed: {os.strerror(err)}")
        self.link_fd = link_fd

    def close(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            os.close(self.cgroup_fd)
            self.link_fd = -1

