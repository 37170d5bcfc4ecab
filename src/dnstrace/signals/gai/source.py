"""getaddrinfo / gethostbyname latency per process: the ``gai`` signal.

``GaiSource`` compiles ``gai.bpf.c`` once and attaches its two programs to
``getaddrinfo``, ``gethostbyname`` and ``gethostbyname2`` of every libc on the
node (``libcs.py`` finds them; a rescan every ``libc_rescan_interval_ns``
picks up new containers). Each attachment carries the cookie ``libc_id << 8 |
func`` so an event names the libc and function it went through. Events come
from a BPF ring buffer read directly from shared memory (``dnstrace.kernel.ringbuf``):
a drain's records are unpacked in runs (``drain_sized``) and turned into event
dicts by ``GaiDecoder`` in one comprehension, with no per-event function call.

Event fields: kind="gai", ts (unix ns when the call started), pid, tid, comm,
func, name, latency_ns, error (EAI_* name from getaddrinfo's return; "NULL" when
gethostbyname* returned NULL), libc (path).
"""

from __future__ import annotations

import platform
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dnstrace import log
from dnstrace.config import KEYS_BY_NAME
from dnstrace.errors import DnstraceError, UsageError
from dnstrace.kernel.clock import KernelClock
from dnstrace.kernel.ringbuf import Record
from dnstrace.kernel.ringsource import BpfRingSource, Stats
from dnstrace.signals.base import Event

if TYPE_CHECKING:
    from dnstrace.kernel.uprobe import UprobeLink
    from dnstrace.signals.gai.execwatch import ExecWatcher
    from dnstrace.signals.gai.libcs import Libc, LibcSet

FUNCS = ("getaddrinfo", "gethostbyname", "gethostbyname2")
FUNC_GETADDRINFO = 0

# struct gai_event_short / struct gai_event in gai.h: the head, then the name area.
# Both unpack to the same tuple: (start_ns, latency_ns, pid_tgid, libc_id, ret, func,
# name_len, comm, name area).
GAI_NAME_LEN = 256
GAI_SHORT_NAME_LEN = 64
_HEAD_FORMAT = "<QQQIiII16s"
GAI_EVENT_HEAD = struct.Struct(_HEAD_FORMAT)
GAI_EVENT_SHORT = struct.Struct(f"{_HEAD_FORMAT}{GAI_SHORT_NAME_LEN}s")
GAI_EVENT = struct.Struct(f"{_HEAD_FORMAT}{GAI_NAME_LEN}s")
# Ring record length -> layout; the short record first: runs of it are unpacked in one go.
GAI_LAYOUTS = {GAI_EVENT_SHORT.size: GAI_EVENT_SHORT, GAI_EVENT.size: GAI_EVENT}

# The EAI_* values glibc and musl share (netdb.h), plus glibc's GNU extensions.
EAI_NAMES = {
    -1: "EAI_BADFLAGS", -2: "EAI_NONAME", -3: "EAI_AGAIN", -4: "EAI_FAIL", -5: "EAI_NODATA",
    -6: "EAI_FAMILY", -7: "EAI_SOCKTYPE", -8: "EAI_SERVICE", -9: "EAI_ADDRFAMILY", -10: "EAI_MEMORY",
    -11: "EAI_SYSTEM", -12: "EAI_OVERFLOW", -100: "EAI_INPROGRESS", -101: "EAI_CANCELED",
    -102: "EAI_NOTCANCELED", -103: "EAI_ALLDONE", -104: "EAI_INTR", -105: "EAI_IDN_ENCODE",
}
# gethostbyname* report failure only as a NULL return (see gai.bpf.c).
GETHOSTBYNAME_FAILED = "NULL"

# Slots of the counters array (GAI_COUNTER_* in gai.h). inflight_full: a call not timed because another
# thread's call held its in-flight slot; stale_inflight: slots taken over from threads
# that died mid-call (their return never came).
COUNTER_NAMES = ("inflight_full", "ringbuf_full", "name_unreadable", "stale_inflight")
# The flag's default is the config key's (one declaration per setting).
DEFAULT_RESCAN_INTERVAL_NS: int = KEYS_BY_NAME["agent.libc_rescan_interval"].default

# Bytes the return instruction pops off the stack (pairs a uretprobe with its uprobe).
RET_SP_ADJUST = {"x86_64": 8, "aarch64": 0}


def error_name(func: int, ret: int) -> str | None:
    if ret == 0:
        return None
    if func != FUNC_GETADDRINFO:
        return GETHOSTBYNAME_FAILED
    return EAI_NAMES.get(ret, f"EAI_{ret}")


class GaiDecoder:
    """Raw record tuples (``GAI_LAYOUTS``) -> event dicts, a whole drain in one comprehension.

    Command names and host names repeat (a service asks for the same few names), so their
    text is kept per raw bytes in a small table, cleared when it reaches ``max_texts``.
    A name is cut at ``name_len`` and again at its first NUL (a bad ``name_len`` cannot
    carry bytes from beyond the name)."""

    def __init__(self, unix_offset_ns: int = 0, libc_paths: dict[int, str] | None = None, max_texts: int = 4096):
        self.unix_offset_ns = unix_offset_ns
        self.libc_paths = libc_paths if libc_paths is not None else {}
        self.max_texts = max_texts
        self.texts: dict[bytes, str] = {}

    def _text(self, raw: bytes) -> str:
        if len(self.texts) >= self.max_texts:
            self.texts.clear()
        text = self.texts[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        return text

    def decode(self, records: list[Record]) -> list[Event]:
        known = self.texts.get
        text = self._text
        offset = self.unix_offset_ns
        libc = self.libc_paths.get
        return [
            {
                "kind": "gai",
                "ts": start_ns + offset,
                "pid": pid_tgid >> 32,
                "tid": pid_tgid & 0xFFFFFFFF,
                "comm": known(comm) or text(comm),
                "func": FUNCS[func] if func < _NFUNCS else f"func{func}",
                "name": (known(name[:name_len]) or text(name[:name_len]) or None) if name_len else None,
                "latency_ns": latency_ns,
                "error": None if ret == 0 else error_name(func, ret),
                "libc": libc(libc_id),
            }
            for start_ns, latency_ns, pid_tgid, libc_id, ret, func, name_len, comm, name in records
        ]


_NFUNCS = len(FUNCS)


class GaiSource(BpfRingSource):
    """Emits ``gai`` events for every libc resolver call on the node (reusable by the lookups join)."""

    name = "gai"

    program = Path(__file__).with_name("gai.bpf.c")
    counters_map = "counters"
    counter_names = COUNTER_NAMES

    def __init__(self, pids: list[int] | None = None, min_latency_ns: int | None = None,
                 libc_rescan_interval_ns: int = DEFAULT_RESCAN_INTERVAL_NS, max_libcs: int = 256,
                 clock: KernelClock | None = None):
        if libc_rescan_interval_ns <= 0:
            raise UsageError("the libc rescan interval must be positive")
        super().__init__(clock)
        self.pids = sorted(set(pids or ()))
        self.min_latency_ns = min_latency_ns
        self.rescan_interval_ns = libc_rescan_interval_ns
        self.max_libcs = max_libcs
        self.enter_fd = self.return_fd = -1
        self.links: dict[int, list[UprobeLink]] = {}  # libc id -> its UprobeLinks
        self.libcs: LibcSet | None = None
        self.next_rescan_ns = 0
        self.decoder = GaiDecoder()
        self.exec_watcher: ExecWatcher | None = None  # execwatch.py: scan a new process's libc at its exec
        self.log = log.get("gai")

    # --- set-up ---------------------------------------------------------------------

    def defines(self) -> dict[str, object]:
        defines: dict[str, object] = {"GAI_RET_SP_ADJUST": RET_SP_ADJUST.get(platform.machine(), 8)}
        if self.pids:
            defines["GAI_FILTER_PIDS"] = 1
        if self.min_latency_ns:
            defines["GAI_MIN_LATENCY_NS"] = f"{int(self.min_latency_ns)}ULL"
        return defines

    def attach(self) -> None:
        from dnstrace.kernel import load as bpfload  # noqa: PLC0415
        from dnstrace.signals.gai.libcs import LibcSet  # noqa: PLC0415

        bcc = bpfload.import_bcc()
        self.enter_fd = self.bpf.load_func(b"gai_enter", bcc.BPF.KPROBE).fd
        self.return_fd = self.bpf.load_func(b"gai_return", bcc.BPF.KPROBE).fd
        if self.pids:
            table = self.bpf[b"pid_filter"]
            for pid in self.pids:
                table[table.Key(pid)] = table.Leaf(1)
        self.libcs = LibcSet(self._attach_libc, self._detach_libc, max_libcs=self.max_libcs)
        self.clock.refresh()
        self.decoder = GaiDecoder(self.clock.offset_ns, self.libcs.paths_by_id)
        self._start_exec_watcher()  # before the first scan: a process exec'd during it is not missed
        self.libcs.refresh()
        self.next_rescan_ns = time.monotonic_ns() + self.rescan_interval_ns
        if not self.libcs.attached:
            self.log.warning("no probeable libc is mapped by any process yet; rescanning",
                             every_s=self.rescan_interval_ns / 1e9)

    def _start_exec_watcher(self) -> None:
        from dnstrace.signals.gai.execwatch import ExecWatcher

        watcher = ExecWatcher()
        try:
            watcher.start()
        except DnstraceError as err:  # the periodic rescan still finds new libcs, later
            watcher.close()
            self.log.warning("exec tracepoint unavailable; new libcs found by rescan only", error=err.message)
            return
        self.exec_watcher = watcher

    def _scan_new_processes(self, again: bool = False) -> None:
        """Attach the libcs of processes that just exec'd (``again``: those seen last time, once more)."""
        from dnstrace.signals.gai.libcs import scan

        watcher = self.exec_watcher
        if watcher is None or self.libcs is None:
            return
        pids = list(watcher.retry) if again else watcher.new_pids()
        if again:
            watcher.retry.clear()
        if pids:
            self.libcs.refresh(scan(pids=pids), partial=True)
            if not again:
                for pid in pids:  # glibc's libc.so is mapped a moment after the exec: look once more
                    watcher.retry.put(pid, None)

    def _attach_libc(self, libc: Libc, libc_id: int) -> None:
        from dnstrace.kernel.uprobe import UprobeLink
        from dnstrace.signals.gai.libcs import symbol_offsets

        offsets = symbol_offsets(libc.attach_path, FUNCS)
        if "getaddrinfo" not in offsets:
            raise DnstraceError(f"no getaddrinfo symbol in {libc.attach_path}")
        links = []
        try:
            # Returns first: a call already in flight then has a return probe but no
            # entry, and is ignored, instead of an entry whose return is never seen.
            for retprobe in (True, False):
                for func_id, func in enumerate(FUNCS):
                    if func in offsets:
                        prog_fd = self.return_fd if retprobe else self.enter_fd
                        links.append(UprobeLink(prog_fd, libc.attach_path, offsets[func], retprobe,
                                                cookie=(libc_id << 8) | func_id))
        except OSError:
            for link in reversed(links):
                link.close()
            raise
        self.links[libc_id] = links

    def _detach_libc(self, libc_id: int) -> None:
        links = self.links.pop(libc_id, [])
        # Entries first: no new call starts being tracked while returns are still seen.
        for link in sorted(links, key=lambda lk: lk.retprobe):
            link.close()

    # --- running --------------------------------------------------------------------

    def fds(self) -> list[int]:
        return super().fds() + (self.exec_watcher.fds() if self.exec_watcher else [])

    def poll(self) -> list[Event]:
        if not self.reader or not self.libcs:
            return []
        self._scan_new_processes()
        self.clock.refresh()
        self.decoder.unix_offset_ns = self.clock.offset_ns
        self.decoder.libc_paths = self.libcs.paths_by_id
        return self.decoder.decode(self.reader.drain_sized(GAI_LAYOUTS))

    def tick(self, now_ns: int) -> list[Event]:
        self._scan_new_processes(again=True)
        mono = time.monotonic_ns()
        if self.libcs and mono >= self.next_rescan_ns:
            self.libcs.refresh()
            self.next_rescan_ns = mono + self.rescan_interval_ns
        return []

    def live_stats(self) -> Stats:
        out: Stats = {name: value for name, value in self.kernel_counters().items() if value} if self.bpf else {}
        if self.reader:
            out["events"] = self.reader.records
            if self.reader.malformed:
                out["malformed"] = self.reader.malformed
        if self.libcs:
            out["libcs"] = len(self.libcs.attached)
            for attr in ("probe_failures", "over_limit", "detached"):
                if getattr(self.libcs, attr):
                    out[f"libc_{attr}"] = getattr(self.libcs, attr)
        if self.exec_watcher:
            out.update(self.exec_watcher.stats())
        missed = self.kernel_missed()
        if missed:
            out["kernel_missed"] = missed  # calls whose probe the kernel skipped (see kernel.stats)
        return out

    def detach(self) -> None:
        if self.exec_watcher:
            self.exec_watcher.close()
            self.exec_watcher = None
        if self.libcs:
            self.libcs.close()
            self.libcs.attached.clear()
        for libc_id in list(self.links):
            self._detach_libc(libc_id)


# --- the signal -----------------------------------------------------------------------
