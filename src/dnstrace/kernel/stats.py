"""Kernel-side statistics of loaded BPF programs: fdinfo misses and our per-CPU counter arrays.

``recursion_misses``: times the kernel skipped a program because another BPF
program (ours or anyone's) was already running on that CPU, e.g. a timer softirq
firing tcp_retransmit_skb while a uprobe or kfree_skb program runs in the task it
interrupted. Those events are lost without any ring buffer or map being full, so
each source adds them to its stats as ``kernel_missed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any  # bcc's objects carry no types


def recursion_misses(prog_fds: Iterable[int]) -> int:
    """Sum of ``recursion_misses`` over program fds (0 for fds the kernel does not report it for)."""
    total = 0
    for fd in prog_fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("recursion_misses:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def bcc_prog_fds(bpf: Any) -> list[int]:
    """The fds of every program a bcc ``BPF`` object has loaded."""
    return [fn.fd for fn in bpf.funcs.values() if getattr(fn, "fd", -1) >= 0]


def per_cpu_counters(table: Any, names: Sequence[str]) -> dict[str, int]:
    """A BPF_PERCPU_ARRAY of counters, slot i named ``names[i]``, summed over CPUs."""
    return {name: sum(table[table.Key(slot)]) for slot, name in enumerate(names)}
