"""How a signal declares its kernel<->Python ABI: which Python struct decodes which C struct of its header.

Each signal with a header declares ``HEADER_ABI`` in its ``abi.py``; the ABI unit test
(tests/unit/kernel/test_abi.py) compiles the header with gcc and holds every declaration
against the compiler's offsets, sizes and ``#define``s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StructAbi:
    c_struct: str
    python: struct.Struct
    at: str | None = None  # the Python struct starts at this member (None: at 0)
    whole: bool = True  # it covers the C struct to its end (else a leading run of it)


@dataclass(frozen=True)
class EnumAbi:
    """``#define <prefix>X n``: Python's ``names[n]`` is ``names_by_define[<prefix>X]``."""

    prefix: str
    names: tuple[str, ...]
    names_by_define: dict[str, str]
    count_define: str | None = None  # e.g. TCP_NSTATS: equals len(names), not itself an entry


@dataclass(frozen=True)
class HeaderAbi:
    """One header: its structs as Python decodes them, its counter runs and constants."""

    header: Path
    structs: tuple[StructAbi, ...]
    enums: tuple[EnumAbi, ...] = ()
    constants: dict[str, int] = field(default_factory=dict)  # define -> the Python value
    sizes: dict[str, int] = field(default_factory=dict)  # C struct -> the size Python reckons with
    offsets: dict[str, int] = field(default_factory=dict)  # "struct.member" -> where Python reads it
