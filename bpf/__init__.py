"""Kernel side: one ``<signal>.bpf.c`` per signal plus ``dnstrace.h`` (shared structs).

bcc compiles these at load time (see ``dnstrace.agent.bpfload``). They read only
stable ABIs: tracepoint fields, uprobe arguments and packet bytes through helpers.
"""

from __future__ import annotations

from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent


def source_path(name: str) -> Path:
    """``source_path("gai")`` -> the path of ``gai.bpf.c``."""
    return BPF_DIR / f"{name}.bpf.c"
