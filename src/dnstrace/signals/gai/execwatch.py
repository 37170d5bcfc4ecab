"""Coverage from the first lookup: new programs are announced by an exec tracepoint.

``ExecWatcher`` loads ``exec.bpf.c`` (sched:sched_process_exec; one ring-buffer
record, the pid, per exec) so the getaddrinfo source scans a new process's libc at
once (``libcs.scan_pids``) instead of up to ``libc_rescan_interval`` later: a new
container, a musl program, a binary whose libc nobody else maps. glibc's loader maps
libc.so a moment after the exec, so a pid whose maps show no libc yet is looked at
once more on the next tick. The periodic rescan stays as the fallback (and for libcs
loaded later with dlopen). Records lost to a full ring are counted (``exec_lost``).
"""

from __future__ import annotations

import struct
from pathlib import Path

from dnstrace import log
from dnstrace.bounded import BoundedDict
from dnstrace.kernel.ringsource import BpfRingSource

EXEC_RECORD = struct.Struct("<I")
MAX_RETRY_PIDS = 4096  # pids whose libc was not mapped yet, looked at again on the next tick


class ExecWatcher(BpfRingSource):
    """Not a signal of its own: GaiSource polls it (``new_pids``) and reports its stats."""

    name = "exec"
    program = Path(__file__).with_name("exec.bpf.c")  # bcc attaches its TRACEPOINT_PROBE itself
    ring_map = "execs"
    counters_map = "exec_lost"
    counter_names = ("lost",)

    def __init__(self) -> None:
        super().__init__()
        self.execs = 0
        self.retry: BoundedDict = BoundedDict(MAX_RETRY_PIDS)  # pid -> None
        self.log = log.get("exec")

    def new_pids(self) -> list[int]:
        """pids that exec'd since the last call (in order, without repeats)."""
        if not self.reader:
            return []
        pids = [record[0] for record in self.reader.drain(EXEC_RECORD)]
        self.execs += len(pids)
        return list(dict.fromkeys(pids))

    def live_stats(self) -> dict[str, object]:
        out: dict[str, object] = {"execs": self.execs}
        if self.bpf is not None:
            out["exec_lost"] = self.kernel_counters()["lost"]
        return out
