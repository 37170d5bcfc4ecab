"""Kernel plumbing shared by every signal: bcc loading, ring buffers, maps, uprobes, tracefs.

Each signal keeps its own ``<name>.bpf.c`` and ``<name>.h`` in its folder under
``dnstrace.signals``; this folder holds ``dnstrace.h``, the structs they share.
The programs read only stable ABIs: tracepoint fields, uprobe arguments and packet
bytes through helpers.
"""

from __future__ import annotations

from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
