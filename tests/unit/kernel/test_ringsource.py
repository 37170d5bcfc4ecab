"""BpfRingSource's lifecycle without a kernel: what start loads, what close releases, stats after close."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnstrace.errors import DnstraceError
from dnstrace.kernel import load as bpfload
from dnstrace.kernel import ringsource
from dnstrace.kernel.ringsource import BpfRingSource, define_lines


class FakeTable:
    def __init__(self, map_fd: int = 0, slots: list[list[int]] | None = None):
        self.map_fd = map_fd
        self.slots = slots or []

    def Key(self, slot: int) -> int:  # noqa: N802 - bcc's spelling
        return slot

    def __getitem__(self, slot: int) -> list[int]:
        return self.slots[slot]  # one value per CPU


class FakeBpf:
    def __init__(self):
        self.tables = {"ring": FakeTable(map_fd=42), "stats": FakeTable(slots=[[1, 2], [0, 5]])}
        self.funcs: dict = {}
        self.cleaned = 0

    def __getitem__(self, name: str) -> FakeTable:
        return self.tables[name]

    def cleanup(self) -> None:
        self.cleaned += 1


class FakeReader:
    def __init__(self, map_fd: int):
        self.fd = map_fd
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class Toy(BpfRingSource):
    name = "toy"
    program = Path("/nonexistent/toy.bpf.c")
    ring_map = "ring"
    counter_names = ("seen", "lost")

    def __init__(self, fail_attach: bool = False):
        super().__init__()
        self.fail_attach = fail_attach
        self.attached = 0
        self.detached = 0

    def defines(self) -> dict[str, object]:
        return {"TOY_MAX": 16, "TOY_NS": "5ULL"}

    def attach(self) -> None:
        self.attached += 1
        if self.fail_attach:
            raise DnstraceError("attach failed")

    def detach(self) -> None:
        self.detached += 1

    def live_stats(self) -> dict[str, object]:
        return {**self.kernel_counters(), "missed": self.kernel_missed()}


@pytest.fixture
def loaded(monkeypatch):
    """Every program load returns a FakeBpf; records what was loaded with which text."""
    loads: list[tuple[Path, str, FakeBpf]] = []

    def fake_load(path: Path, cflags=None, text_prefix: str = "") -> FakeBpf:
        bpf = FakeBpf()
        loads.append((path, text_prefix, bpf))
        return bpf

    monkeypatch.setattr(bpfload, "load", fake_load)
    monkeypatch.setattr(ringsource, "RingBufReader", FakeReader)
    return loads


def test_define_lines():
    assert define_lines({"A": 1, "B": "2ULL"}) == "#define A 1\n#define B 2ULL\n"
    assert define_lines({}) == ""


def test_start_loads_the_program_with_its_defines_then_attaches(loaded):
    toy = Toy()
    assert toy.fds() == [] and toy.stats() == {"seen": 0, "lost": 0, "missed": 0}  # before start too
    toy.start()
    [(path, text, bpf)] = loaded
    assert path == Toy.program and text == "#define TOY_MAX 16\n#define TOY_NS 5ULL\n"
    assert toy.fds() == [42] and toy.attached == 1
    assert toy.stats() == {"seen": 3, "lost": 5, "missed": 0}  # per-CPU slots summed


def test_close_keeps_the_last_stats_and_is_safe_twice(loaded):
    toy = Toy()
    toy.start()
    reader, bpf = toy.reader, loaded[0][2]
    toy.close()
    toy.close()
    assert (toy.detached, reader.closed, bpf.cleaned) == (2, 1, 1)
    assert toy.bpf is None and toy.reader is None and toy.fds() == []
    assert toy.stats() == {"seen": 3, "lost": 5, "missed": 0}  # as they were when detached


def test_close_after_a_failed_attach_releases_the_program(loaded):
    toy = Toy(fail_attach=True)
    with pytest.raises(DnstraceError):
        toy.start()
    reader, bpf = toy.reader, loaded[0][2]
    toy.close()
    assert (toy.detached, reader.closed, bpf.cleaned) == (1, 1, 1)


def test_close_without_start_detaches_nothing_loaded():
    toy = Toy()
    toy.close()
    assert toy.detached == 1 and toy.stats() == {"seen": 0, "lost": 0, "missed": 0}
