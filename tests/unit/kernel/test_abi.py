"""The kernel<->Python ABI: every struct and counter the Python side decodes matches its C header.

Each signal folder with a header declares ``HEADER_ABI`` in its ``abi.py``
(``dnstrace.kernel.abi``): its header, which Python
``struct.Struct`` decodes which C struct (whole, or a run of it starting at a member), which
``#define`` prefix numbers which Python name tuple, and single constants. The C layout comes
from gcc compiling a small program that includes the header and prints ``offsetof`` and
``sizeof`` of every member (so the numbers are the compiler's, not a re-implementation of its
alignment rules); this file's parser only reads member names and types to walk them.

Both sides are reduced to their data fields, in order, as (offset, size, kind) with kind
u(nsigned), s(igned) or b(ytes): C arrays of bytes are one ``b`` field (Python ``Ns``),
other arrays one field per element (Python ``NQ``), nested structs their own fields, and
padding (C members named pad*, Python ``x``) is left out on both sides.
"""

from __future__ import annotations

import importlib
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from dnstrace.kernel import KERNEL_DIR
from dnstrace.kernel.abi import HeaderAbi

SIGNALS_DIR = Path(importlib.import_module("dnstrace.signals").__file__).parent

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to read the C layouts")


def header_abis() -> dict[str, HeaderAbi]:
    """Every signal folder with a header declares ``HEADER_ABI`` in its ``abi.py``."""
    out = {}
    for folder in sorted(p for p in SIGNALS_DIR.iterdir() if p.is_dir() and any(p.glob("*.h"))):
        module = importlib.import_module(f"dnstrace.signals.{folder.name}.abi")
        out[folder.name] = module.HEADER_ABI
    return out


SIGNAL_ABIS = header_abis()


# --- the C side ---------------------------------------------------------------------------------

C_SCALARS = {"__u8": ("u", 1), "__u16": ("u", 2), "__u32": ("u", 4), "__u64": ("u", 8),
             "__s8": ("s", 1), "__s16": ("s", 2), "__s32": ("s", 4), "__s64": ("s", 8), "char": ("b", 1)}
MEMBER = re.compile(r"^(struct\s+\w+|\w+)\s+(\w+)\s*(\[[^\]]+\])?$")


@dataclass(frozen=True)
class Member:
    name: str
    type: str  # a C_SCALARS key or "struct x"
    array: bool
    offset: int = 0
    size: int = 0
    element_size: int = 0


def _without_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def parse_structs(text: str) -> dict[str, list[Member]]:
    """Member names and types of every ``struct x { ... };`` of a header (layout comes from gcc)."""
    structs = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", _without_comments(text), flags=re.S):
        members = []
        for declaration in filter(None, (d.strip() for d in body.split(";"))):
            match = MEMBER.match(" ".join(declaration.split()))
            assert match, f"struct {name}: cannot read the member {declaration!r}"
            members.append(Member(match[2], match[1], match[3] is not None))
        structs[name] = members
    return structs


def parse_defines(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in
            re.findall(r"^#define\s+(\w+)\s+(\d+)\b", _without_comments(text), flags=re.M)}


def compile_layouts(header: Path, structs: dict[str, list[Member]], tmp: Path) -> dict[str, list[Member]]:
    """Each member's offset, size and element size as gcc lays them out, plus each struct's size."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <linux/types.h>", f'#include "{header.name}"',
             "int main(void) {"]
    for name, members in structs.items():
        lines.append(f'printf("{name} - %zu\\n", sizeof(struct {name}));')
        for m in members:
            element = f"((struct {name} *)0)->{m.name}" + ("[0]" if m.array else "")
            lines.append(f'printf("{name} {m.name} %zu %zu %zu\\n", offsetof(struct {name}, {m.name}), '
                         f"sizeof(((struct {name} *)0)->{m.name}), sizeof({element}));")
    lines += ["return 0;", "}"]
    source, binary = tmp / "layout.c", tmp / "layout"
    source.write_text("\n".join(lines) + "\n")
    # dnstrace.h's inline helper uses BPF names a user-space compile does not have.
    subprocess.run(["gcc", "-std=gnu11", "-D__always_inline=inline", "-DBPF_RB_NO_WAKEUP=1", "-DBPF_RB_FORCE_WAKEUP=2",
                    f"-I{header.parent}", f"-I{KERNEL_DIR}", "-o", str(binary), str(source)], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    laid_out: dict[str, list[Member]] = {name: [] for name in structs}
    by_name = {(s, m.name): m for s, members in structs.items() for m in members}
    for line in out.splitlines():
        struct_name, member, *numbers = line.split()
        if member == "-":
            laid_out[struct_name].append(Member("-", "sizeof", False, size=int(numbers[0])))
            continue
        offset, size, element_size = map(int, numbers)
        m = by_name[(struct_name, member)]
        laid_out[struct_name].append(Member(m.name, m.type, m.array, offset, size, element_size))
    return laid_out


def struct_size(layouts: dict[str, list[Member]], name: str) -> int:
    return next(m.size for m in layouts[name] if m.name == "-")


def c_fields(layouts: dict[str, list[Member]], name: str, base: int = 0) -> list[tuple[int, int, str]]:
    """The data fields of a C struct as (offset, size, kind), nested structs and arrays walked."""
    fields = []
    for m in layouts[name]:
        if m.name == "-" or m.name.startswith("pad"):
            continue
        start = base + m.offset
        if m.type.startswith("struct "):
            inner = m.type.split()[1]
            for i in range(m.size // m.element_size):
                fields += c_fields(layouts, inner, start + i * m.element_size)
            continue
        kind, width = C_SCALARS[m.type]
        assert width == m.element_size, f"{name}.{m.name}: {m.type} is {m.element_size} bytes here"
        if m.array and width == 1:
            fields.append((start, m.size, "b"))
        else:
            fields += [(start + i * width, width, kind) for i in range(m.size // width)]
    return fields


def member_offset(layouts: dict[str, list[Member]], name: str, path: str) -> int:
    """Offset of ``member`` or ``member[i]`` in a struct."""
    member, _, index = path.partition("[")
    m = next(m for m in layouts[name] if m.name == member)
    return m.offset + (int(index.rstrip("]")) * m.element_size if index else 0)


# --- the Python side ----------------------------------------------------------------------------

PY_CODES = {"B": ("u", 1), "H": ("u", 2), "I": ("u", 4), "Q": ("u", 8),
            "b": ("s", 1), "h": ("s", 2), "i": ("s", 4), "q": ("s", 8)}


def python_fields(layout: struct.Struct, base: int) -> list[tuple[int, int, str]]:
    assert layout.format[0] == "<", f"{layout.format}: the kernel's structs are read little-endian, unaligned"
    fields, offset = [], base
    for count_text, code in re.findall(r"(\d*)([a-zA-Z])", layout.format[1:]):
        count = int(count_text or 1)
        if code == "x":
            offset += count
        elif code == "s":
            fields.append((offset, count, "b"))
            offset += count
        else:
            kind, width = PY_CODES[code]
            fields += [(offset + i * width, width, kind) for i in range(count)]
            offset += count * width
    assert offset - base == layout.size
    return fields


# --- the checks ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, tuple[HeaderAbi, dict[str, list[Member]], dict[str, int]]]:
    out = {}
    for signal, abi in SIGNAL_ABIS.items():
        text = abi.header.read_text()
        tmp = tmp_path_factory.mktemp(signal)
        out[signal] = (abi, compile_layouts(abi.header, parse_structs(text), tmp),
                       {**parse_defines((KERNEL_DIR / "dnstrace.h").read_text()), **parse_defines(text)})
    return out


@pytest.mark.parametrize("signal", list(SIGNAL_ABIS))
def test_python_structs_match_the_header(layouts, signal):
    abi, c_layouts, _ = layouts[signal]
    for check in abi.structs:
        start = member_offset(c_layouts, check.c_struct, check.at) if check.at else 0
        end = start + check.python.size
        size = struct_size(c_layouts, check.c_struct)
        label = f"{abi.header.name}: struct {check.c_struct}" + (f" from {check.at}" if check.at else "")
        if check.whole:
            assert (start, end) == (0, size), f"{label} is {size} bytes, Python's {check.python.format!r} {end - start}"
        assert end <= size, f"{label}: Python reads past the struct's end ({end} > {size})"
        expected = [f for f in c_fields(c_layouts, check.c_struct) if start <= f[0] < end]
        assert python_fields(check.python, start) == expected, label
    for name, size in abi.sizes.items():
        assert struct_size(c_layouts, name) == size, f"sizeof(struct {name})"
    for path, offset in abi.offsets.items():
        name, member = path.split(".")
        assert member_offset(c_layouts, name, member) == offset, f"offsetof(struct {name}, {member})"


@pytest.mark.parametrize("signal", list(SIGNAL_ABIS))
def test_counters_and_constants_match_the_header(layouts, signal):
    abi, _, defines = layouts[signal]
    for enum in abi.enums:
        entries = {name: value for name, value in defines.items()
                   if name.startswith(enum.prefix) and name != enum.count_define}
        assert set(entries) == set(enum.names_by_define), f"{abi.header.name}: {enum.prefix}* defines"
        for define, value in entries.items():
            assert enum.names[value] == enum.names_by_define[define], f"{define} = {value}"
        if enum.count_define:
            assert defines[enum.count_define] == len(enum.names), enum.count_define
    for define, value in abi.constants.items():
        assert defines[define] == value, define


def test_a_layout_difference_is_seen(tmp_path):
    """The check can fail: a Python format one field off from its C struct."""
    header = tmp_path / "x.h"
    header.write_text("struct x { __u64 ts; __u32 pid; __s32 err; char comm[16]; };\n")
    c_layouts = compile_layouts(header, parse_structs(header.read_text()), tmp_path)
    assert python_fields(struct.Struct("<QIi16s"), 0) == c_fields(c_layouts, "x")
    assert python_fields(struct.Struct("<QII16s"), 0) != c_fields(c_layouts, "x")  # signedness
    assert python_fields(struct.Struct("<QiI16s"), 0) != c_fields(c_layouts, "x")  # order
    assert struct_size(c_layouts, "x") == 32
