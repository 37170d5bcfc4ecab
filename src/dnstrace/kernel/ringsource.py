"""One Source lifecycle for every signal that loads a bcc program and reads one of its ring buffers.

``BpfRingSource.start`` compiles the subclass's ``program`` (``<name>.bpf.c`` next to it)
with the ``#define``\\ s of ``defines()``, opens the reader on the ring buffer map
``ring_map`` and calls ``attach()`` (fill maps, attach uprobes or cgroup links; bcc
attaches tracepoint programs itself). ``close`` is the reverse and safe after a failed
start or twice: ``stats()`` taken just before detaching, ``detach()``, the reader, the
program. ``stats()`` after ``close()`` returns the counters as they were when the programs
were detached, so final status lines and the agent's shutdown log stay right.

What a subclass reads: ``kernel_counters()`` (its per-CPU counter array ``counters_map``,
slot i named ``counter_names[i]``), ``kernel_missed()`` (runs the kernel skipped, see
``kernel.stats``) and ``clock`` (kernel timestamps to unix ns, ``kernel.clock``). It
reports its counters in ``live_stats`` (which must work before ``start`` too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from dnstrace.flow import Source
from dnstrace.kernel.clock import KernelClock, shared_clock
from dnstrace.kernel.ringbuf import RingBufReader
from dnstrace.kernel.stats import bcc_prog_fds, per_cpu_counters, recursion_misses

Stats = dict[str, Any]


def define_lines(defines: dict[str, object]) -> str:
    """``{"RINGBUF_PAGES": 64}`` -> ``"#define RINGBUF_PAGES 64\\n"``, put before the program's text."""
    return "".join(f"#define {name} {value}\n" for name, value in defines.items())


class BpfRingSource(Source):
    program: ClassVar[Path]  # the <name>.bpf.c this source loads
    ring_map: ClassVar[str] = "events"
    counters_map: ClassVar[str] = "stats"
    counter_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, clock: KernelClock | None = None):
        self.clock = clock or shared_clock()
        self.bpf: Any = None  # the bcc.BPF object, None before start and after close
        self.reader: RingBufReader | None = None
        self._final_stats: Stats | None = None

    # --- what subclasses fill in --------------------------------------------------------

    def defines(self) -> dict[str, object]:
        """Compile-time settings of the program (table sizes, filters)."""
        return {}

    def attach(self) -> None:
        """After the program is loaded and the reader open: fill maps, attach probes."""

    def detach(self) -> None:
        """Before the program is released: close what ``attach`` opened. Safe to call twice."""

    def live_stats(self) -> Stats:
        return {}

    # --- the lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        from dnstrace.kernel import load as bpfload  # noqa: PLC0415 - bcc is heavy

        self.bpf = bpfload.load(self.program, text_prefix=define_lines(self.defines()))
        self.reader = RingBufReader(self.bpf[self.ring_map].map_fd)
        self.attach()

    def fds(self) -> list[int]:
        return [self.reader.fd] if self.reader is not None else []

    def kernel_counters(self) -> dict[str, int]:
        if self.bpf is None:
            return dict.fromkeys(self.counter_names, 0)
        return per_cpu_counters(self.bpf[self.counters_map], self.counter_names)

    def kernel_missed(self) -> int:
        return recursion_misses(bcc_prog_fds(self.bpf)) if self.bpf is not None else 0

    def stats(self) -> Stats:
        if self._final_stats is not None:
            return dict(self._final_stats)
        return self.live_stats()

    def close(self) -> None:
        if self.bpf is not None and self._final_stats is None:
            self._final_stats = self.live_stats()
        self.detach()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            except Exception:  # noqa: BLE001 - bcc's cleanup of a half-torn-down object; the fds go with it
                pass
            self.bpf = None
