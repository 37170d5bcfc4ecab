"""Find every distinct libc mapped on the node (host, containers, musl) and where its resolver functions are.

A scan reads ``/proc/*/maps`` and keeps mappings of glibc (``libc.so.6``,
``libc-2.*.so``) and musl (``ld-musl-*.so.1``, ``libc.musl-*.so.1``, Debian's
``.../x86_64-linux-musl/libc.so``). A file is identified by (st_dev, st_ino) as
reached through ``/proc/PID/root/<path>``, so a container's own libc counts once
however many processes map it and even when its path means nothing on the host.
It is attached through a path the agent can open: the path itself when it leads
to the same file from the agent's mount namespace, else ``/proc/PID/root/<path>``
(or ``/proc/PID/map_files/...`` when the mapped file was deleted, e.g. replaced
by a package upgrade). Function offsets come from the file's ELF ``.dynsym``.

``LibcSet.refresh`` diffs a scan against what is attached: new libcs are attached,
libcs no longer mapped anywhere are detached, one that cannot be probed is
skipped with one log line, counted, and not retried.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dnstrace import log

GLIBC_NAME = re.compile(r"^(libc\.so\.6|libc-2\.\d+\.so)$")
MUSL_NAME = re.compile(r"^(ld-musl-[\w-]+\.so\.1|libc\.musl-[\w-]+\.so\.1)$")
DELETED_SUFFIX = " (deleted)"


def libc_flavour(path: str) -> str | None:
    """``glibc``, ``musl`` or None for a mapped file's path."""
    base = path.rsplit("/", 1)[-1]
    if GLIBC_NAME.match(base):
        return "glibc"
    if MUSL_NAME.match(base):
        return "musl"
    # Debian's musl: /lib/ld-musl-x86_64.so.1 -> /usr/lib/x86_64-linux-musl/libc.so (maps show the target).
    if base == "libc.so" and "musl" in path:
        return "musl"
    return None


@dataclass(frozen=True)
class Libc:
    key: tuple[int, int]  # (st_dev, st_ino) of the file
    flavour: str  # glibc or musl
    path: str  # as mapped, inside the process's mount namespace
    attach_path: str  # a path the agent opens to reach the same file (also shown in events)
    pid: int  # a process that mapped it when it was found


@dataclass
class ScanResult:
    libcs: dict[tuple[int, int], Libc]
    processes: int = 0
    unreadable: int = 0  # processes gone or maps unreadable during the scan


def _candidates(maps_text: str) -> Iterable[tuple[str, str, str, bool]]:
    """(address range, maps dev:inode id, path, deleted) of libc mappings in one maps file."""
    for line in maps_text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6:
            continue
        path = fields[5]
        deleted = path.endswith(DELETED_SUFFIX)
        if deleted:
            path = path[: -len(DELETED_SUFFIX)]
        if libc_flavour(path):
            yield fields[0], f"{fields[3]}:{fields[4]}", path, deleted


def _resolve(pid: int, path: str, address_range: str, deleted: bool, proc: str) -> Libc | None:
    through_root = f"{proc}/{pid}/root{path}"
    attach = f"{proc}/{pid}/map_files/{address_range}" if deleted else through_root
    try:
        st = os.stat(attach)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino)
    if not deleted:
        try:
            own = os.stat(path)
            if (own.st_dev, own.st_ino) == key:
                attach = path
        except OSError:
            pass
    return Libc(key=key, flavour=libc_flavour(path) or "glibc", path=path, attach_path=attach, pid=pid)


def scan(proc: str = "/proc", pids: Iterable[int] | None = None) -> ScanResult:
    """Every distinct libc mapped by a process right now (only by ``pids`` when given)."""
    result = ScanResult(libcs={})
    seen_maps_ids: set[str] = set()
    for entry in (os.listdir(proc) if pids is None else [str(pid) for pid in pids]):
        if not entry.isdigit():
            continue
        result.processes += 1
        try:
            with open(f"{proc}/{entry}/maps") as f:
                text = f.read()
        except OSError:
            result.unreadable += 1
            continue
        if "libc" not in text and "musl" not in text:
            continue
        for address_range, maps_id, path, deleted in _candidates(text):
            # The same file is mapped by most processes: resolve each dev:inode once per scan.
            if maps_id in seen_maps_ids:
                continue
            libc = _resolve(int(entry), path, address_range, deleted, proc)
            if libc is None:
                continue
            seen_maps_ids.add(maps_id)
            result.libcs.setdefault(libc.key, libc)
    return result


# --- ELF symbols ------------------------------------------------------------------------

SHT_DYNSYM = 11
PT_LOAD = 1
STT_FUNC = 2
STT_GNU_IFUNC = 10


class ElfError(ValueError):
    pass


def symbol_offsets(path: str, names: Iterable[str]) -> dict[str, int]:
    """File offsets (what a uprobe needs) of the defined functions ``names`` in an ELF64 little-endian file."""
    wanted = {name.encode() for name in names}
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ElfError(f"{path} is not a 64-bit little-endian ELF file")
    (e_phoff, e_shoff) = struct.unpack_from("<QQ", data, 0x20)
    (e_phentsize, e_phnum, e_shentsize, e_shnum) = struct.unpack_from("<HHHH", data, 0x36)
    loads = []
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    found: dict[str, int] = {}
    for sh in sections:
        if sh[1] != SHT_DYNSYM:
            continue
        sym_offset, sym_size, link, entsize = sh[4], sh[5], sh[6], sh[9] or 24
        str_offset = sections[link][4]
        for pos in range(sym_offset, sym_offset + sym_size, entsize):
            st_name, st_info, _other, st_shndx, st_value, _size = struct.unpack_from("<IBBHQQ", data, pos)
            if st_shndx == 0 or st_value == 0 or (st_info & 0xF) != STT_FUNC:
                continue  # undefined, or not a plain function (an IFUNC's address is its resolver)
            end = data.index(b"\0", str_offset + st_name)
            name = data[str_offset + st_name:end]
            if name in wanted and name.decode() not in found:
                for vaddr, filesz, offset in loads:
                    if vaddr <= st_value < vaddr + filesz:
                        found[name.decode()] = st_value - vaddr + offset
                        break
    return found


# --- the attached set ------------------------------------------------------------------


class LibcSet:
    """The libcs currently attached, by key, with a small id each (the BPF cookie)."""

    def __init__(self, attach: Callable[[Libc, int], None], detach: Callable[[int], None],
                 max_libcs: int = 256, max_failed: int = 4096):
        self._attach = attach
        self._detach = detach
        self.max_libcs = max_libcs
        self.max_failed = max_failed
        self.attached: dict[tuple[int, int], tuple[int, Libc]] = {}
        self.paths_by_id: dict[int, str] = {}  # kept after detach so late events still name their libc
        self.failed: dict[tuple[int, int], str] = {}
        self._next_id = 1
        self.scans = 0
        self.probe_failures = 0
        self.over_limit = 0
        self.detached = 0
        self.log = log.get("libcs")

    def refresh(self, result: ScanResult | None = None, partial: bool = False) -> list[Libc]:
        """Attach new libcs, detach vanished ones; returns the newly attached.

        ``partial``: ``result`` covers a few processes only (new ones): attach, never detach."""
        result = result or scan()
        self.scans += 1
        added = []
        for key, libc in result.libcs.items():
            if key in self.attached or key in self.failed:
                continue
            if len(self.attached) >= self.max_libcs:
                self.over_limit += 1
                continue
            libc_id = self._next_id
            try:
                self._attach(libc, libc_id)
            except Exception as err:  # any failure: skip this libc, keep going
                self.probe_failures += 1
                if len(self.failed) < self.max_failed:
                    self.failed[key] = str(err)
                self.log.warning("libc skipped: cannot be probed", libc=libc.attach_path, pid=libc.pid,
                                 error=str(err))
                continue
            self._next_id += 1
            self.attached[key] = (libc_id, libc)
            self.paths_by_id[libc_id] = libc.attach_path
            added.append(libc)
            self.log.info("libc attached", libc=libc.attach_path, flavour=libc.flavour, pid=libc.pid)
        for key in [k for k in self.attached if k not in result.libcs and not partial]:
            libc_id, libc = self.attached.pop(key)
            self._detach(libc_id)
            self.detached += 1
            self.log.info("libc detached: no longer mapped", libc=libc.attach_path)
        if len(self.paths_by_id) > 4 * self.max_libcs:  # bound the id -> path memory
            for libc_id in sorted(self.paths_by_id)[: len(self.paths_by_id) - 2 * self.max_libcs]:
                if all(libc_id != i for i, _ in self.attached.values()):
                    del self.paths_by_id[libc_id]
        return added

    def close(self) -> None:
        for libc_id, _libc in self.attached.values():
            self._detach(libc_id)
        self.attached.clear()
