"""Reading programs' recursion misses from fdinfo tolerates fds that are not BPF programs."""

from __future__ import annotations

import os
from types import SimpleNamespace

from dnstrace.kernel.stats import bcc_prog_fds, recursion_misses


def test_non_program_fds_count_zero(tmp_path):
    path = tmp_path / "plain"
    path.write_text("x")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert recursion_misses([fd, 987654]) == 0  # a plain file, a closed fd
    finally:
        os.close(fd)


def test_bcc_prog_fds_skips_unloaded_functions():
    bpf = SimpleNamespace(funcs={b"a": SimpleNamespace(fd=7), b"b": SimpleNamespace(fd=-1), b"c": object()})
    assert bcc_prog_fds(bpf) == [7]
