"""The gai signal declared once: its options (config keys and flags), columns, filter and ``SIGNAL``."""

from __future__ import annotations

from dataclasses import dataclass

from dnstrace.columns import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_latency
from dnstrace.flow import Source
from dnstrace.signals.base import Flag, SignalSpec, option
from dnstrace.signals.gai.source import DEFAULT_RESCAN_INTERVAL_NS, GaiSource
from dnstrace.units import parse_duration_ns


@dataclass(frozen=True)
class LibcScanOptions:
    libc_rescan_interval_ns: int = option(DEFAULT_RESCAN_INTERVAL_NS, Flag(
        "--libc-rescan-interval", "how often to look for new libcs, e.g. in new containers (default: 30s)",
        metavar="DUR", parse=parse_duration_ns))


@dataclass(frozen=True)
class GaiOptions(LibcScanOptions):
    pids: tuple[int, ...] = ()  # only these processes (a kernel-side filter); from trace's --pid
    min_latency_ns: int | None = None  # only calls at least this slow (kernel-side); from --min-latency


def make_sources(options: GaiOptions) -> list[Source]:
    return [GaiSource(pids=list(options.pids), min_latency_ns=options.min_latency_ns,
                      libc_rescan_interval_ns=options.libc_rescan_interval_ns)]


COLUMNS = (
    TIME_COLUMN,
    *PROCESS_COLUMNS,
    Column("latency_ns", "LATENCY", 9, fmt_latency),
    Column("error", "ERROR", 12),
    Column("func", "FUNC", 14),
    Column("name", "NAME", 40),
    Column("libc", "LIBC", 0),
)

SIGNAL = SignalSpec(
    name="gai",
    help="getaddrinfo/gethostbyname latency per process (every libc: host, containers, musl)",
    description=(
        "Time every getaddrinfo, gethostbyname and gethostbyname2 call in every libc mapped on the\n"
        "node (host glibc, containers' own libcs through /proc/PID/root, musl) with uprobes, and\n"
        "show who asked for which name, how long it took and the EAI_* error. gethostbyname*\n"
        "failures show as NULL: their h_errno is thread-local and out of reach of BPF."
    ),
    columns=COLUMNS,
    options=GaiOptions,
    make_sources=make_sources,
    config_options={"agent.libc_rescan_interval": "libc_rescan_interval_ns"},
    examples=(
        "dnstrace trace gai --min-latency 1s        slow lookups only",
        "dnstrace trace gai --pid 4711 --json       one process, JSON lines",
        "dnstrace trace gai --comm curl --duration 30s",
    ),
)
