"""Read tracepoint formats from the running kernel's tracefs: fields and symbolic tables.

Drop-reason numbers and tracepoint layouts change between kernels (NETFILTER_DROP is
7 on 6.1 and 12 on 6.18), so nothing here comes from headers: the numbers are parsed
from ``events/<system>/<event>/format``, whose ``print fmt`` carries the
``__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)`` table the kernel
itself uses to print the event.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from dnstrace.errors import EnvironmentProblem

_FIELD_RE = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d)")
_PAIR_RE = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    offset: int
    size: int
    signed: bool


@dataclass(frozen=True)
class TracepointFormat:
    system: str
    event: str
    fields: dict[str, Field]
    print_fmt: str

    def has_field(self, name: str) -> bool:
        return name in self.fields

    def symbols(self, field: str) -> dict[int, str]:
        """The ``__print_symbolic(REC-><field>, ...)`` table as {number: name}."""
        return parse_symbolic(self.print_fmt, field)


def _split_decl(decl: str) -> tuple[str, str]:
    """``"const void * skaddr"`` -> ("const void *", "skaddr"); ``"__u8 saddr[4]"`` -> ("__u8[4]", "saddr")."""
    decl = decl.strip()
    match = re.match(r"(?P<type>.*?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<array>\[[^\]]*\])?$", decl)
    if not match:
        return decl, decl
    ctype = match.group("type").strip() + (match.group("array") or "")
    return ctype, match.group("name")


def parse_format(text: str, system: str = "", event: str = "") -> TracepointFormat:
    fields: dict[str, Field] = {}
    print_fmt = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("field:"):
            match = _FIELD_RE.search(stripped)
            if not match:
                continue
            ctype, name = _split_decl(match.group("decl"))
            fields[name] = Field(name, ctype, int(match.group("offset")), int(match.group("size")),
                                 match.group("signed") == "1")
        elif stripped.startswith("print fmt:"):
            print_fmt = stripped[len("print fmt:"):].strip()
    return TracepointFormat(system, event, fields, print_fmt)


def parse_symbolic(print_fmt: str, field: str) -> dict[int, str]:
    """Extract the symbol table printed for ``REC-><field>``; empty when there is none."""
    marker = f"__print_symbolic(REC->{field},"
    start = print_fmt.find(marker)
    if start < 0:
        return {}
    # The table ends at the parenthesis closing __print_symbolic( .
    depth = 0
    end = len(print_fmt)
    for i in range(start + len("__print_symbolic"), len(print_fmt)):
        ch = print_fmt[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    table = {}
    for number, name in _PAIR_RE.findall(print_fmt[start:end]):
        table[int(number, 0)] = name
    return table


def read_format(system: str, event: str, tracefs: str | None = None) -> TracepointFormat:
    """The format of ``system:event`` on this kernel; EnvironmentProblem when it does not exist."""
    if tracefs is None:
        from dnstrace.kernel.load import tracefs_path  # noqa: PLC0415 - avoids a cycle at import

        tracefs = tracefs_path(mount=True)
    path = os.path.join(tracefs, "events", system, event, "format")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise EnvironmentProblem(f"tracepoint {system}:{event} is not available on this kernel ({err.strerror})",
                                 hint="run 'dnstrace doctor' to see which kernel features are missing") from None
    return parse_format(text, system, event)


def drop_reasons(tracefs: str | None = None) -> dict[int, str]:
    """``skb:kfree_skb`` reason numbers -> names (``IP_RPFILTER`` ...), as this kernel prints them."""
    fmt = read_format("skb", "kfree_skb", tracefs)
    reasons = fmt.symbols("reason")
    if not reasons:
        raise EnvironmentProblem("skb:kfree_skb on this kernel has no drop reasons (kernel older than 5.17)",
                                 hint="drop reasons need Linux 5.17 or newer")
    return reasons
