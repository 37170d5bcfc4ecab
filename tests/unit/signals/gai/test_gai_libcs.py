"""libc discovery: maps parsing, ELF symbol offsets, the attach/detach bookkeeping."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from dnstrace.signals.gai.libcs import Libc, LibcSet, ScanResult, _candidates, libc_flavour, scan, symbol_offsets


@pytest.mark.parametrize("path,flavour", [
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", "glibc"),
    ("/lib/libc-2.31.so", "glibc"),
    ("/lib/ld-musl-x86_64.so.1", "musl"),
    ("/lib/libc.musl-x86_64.so.1", "musl"),
    ("/usr/lib/x86_64-linux-musl/libc.so", "musl"),
    ("/usr/lib/x86_64-linux-gnu/libcrypt.so.1", None),
    ("/usr/lib/x86_64-linux-gnu/libc.so", None),  # glibc's linker script, never mapped
    ("/opt/app/libc.so.6.bak", None),
])
def test_flavour(path, flavour):
    assert libc_flavour(path) == flavour


def test_candidates_from_maps_including_deleted():
    maps = (
        "7f0000000000-7f0000028000 r--p 00000000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7f0000028000-7f0000100000 r-xp 00028000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7f1000000000-7f1000001000 r-xp 00000000 00:2a 99 /lib/ld-musl-x86_64.so.1 (deleted)\n"
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n"
        "55d000000000-55d000001000 r--p 00000000 fe:01 77 /usr/bin/my libc.so.6 tool\n"
    )
    found = list(_candidates(maps))
    assert found[0] == ("7f0000000000-7f0000028000", "fe:01:1234", "/usr/lib/x86_64-linux-gnu/libc.so.6", False)
    assert found[2] == ("7f1000000000-7f1000001000", "00:2a:99", "/lib/ld-musl-x86_64.so.1", True)
    assert len(found) == 3


def _own_libc() -> str:
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and libc_flavour(fields[5].strip()) == "glibc":
                return fields[5].strip()
    pytest.skip("this test process does not map glibc")


def test_symbol_offsets_point_at_the_function_code():
    """Ground truth: the bytes at the file offset equal the loaded function's bytes in memory."""
    path = _own_libc()
    offsets = symbol_offsets(path, ("getaddrinfo", "gethostbyname", "gethostbyname2", "no_such_function"))
    assert set(offsets) == {"getaddrinfo", "gethostbyname", "gethostbyname2"}
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    with open(path, "rb") as f:
        data = f.read()
    for name, offset in offsets.items():
        address = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        in_memory = ctypes.string_at(address, 24)
        # Byte 0 may be a uprobe's int3 if some tracer is attached right now.
        assert data[offset + 1:offset + 24] == in_memory[1:], name


def test_symbol_offsets_rejects_non_elf(tmp_path):
    bogus = tmp_path / "libc.so.6"
    bogus.write_bytes(b"not an elf file at all")
    with pytest.raises(ValueError):
        symbol_offsets(str(bogus), ("getaddrinfo",))


def test_scan_finds_own_libc_once():
    result = scan()
    own = _own_libc()
    assert any(libc.path == own for libc in result.libcs.values())
    assert len({libc.key for libc in result.libcs.values()}) == len(result.libcs)


def _libc(n: int) -> Libc:
    return Libc(key=(1, n), flavour="glibc", path=f"/l{n}/libc.so.6", attach_path=f"/l{n}/libc.so.6", pid=n)


def test_libcset_attaches_new_detaches_gone_and_skips_failures():
    attached, detached = {}, []

    def attach(libc, libc_id):
        if libc.pid == 3:
            raise OSError(13, "Permission denied")
        attached[libc_id] = libc

    libcs = LibcSet(attach, detached.append)
    added = libcs.refresh(ScanResult({lc.key: lc for lc in (_libc(1), _libc(2), _libc(3))}))
    assert [lc.pid for lc in added] == [1, 2]
    assert libcs.probe_failures == 1 and (1, 3) in libcs.failed
    assert libcs.paths_by_id == {1: "/l1/libc.so.6", 2: "/l2/libc.so.6"}
    # Next scan: libc 1 vanished, 3 still there (not retried), 4 is new.
    added = libcs.refresh(ScanResult({lc.key: lc for lc in (_libc(2), _libc(3), _libc(4))}))
    assert [lc.pid for lc in added] == [4]
    assert detached == [1] and libcs.probe_failures == 1 and libcs.detached == 1
    assert libcs.paths_by_id[1] == "/l1/libc.so.6"  # late events of a detached libc still named
    libcs.close()
    assert sorted(detached) == [1, 2, 3]  # ids 2 and 3 (libc 4 got id 3)


def test_libcset_bounds_attached_count():
    libcs = LibcSet(lambda libc, i: None, lambda i: None, max_libcs=2)
    libcs.refresh(ScanResult({lc.key: lc for lc in (_libc(1), _libc(2), _libc(3))}))
    assert len(libcs.attached) == 2 and libcs.over_limit == 1
