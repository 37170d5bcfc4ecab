"""A source that owns one bcc program object and reads its events from one ring buffer.

What such sources share: the ring buffer's fd for the Runner's epoll, and counters
that outlive the programs (``stats()`` after ``close()`` returns them as they were when
the programs were detached, so final status lines and agent shutdown logs stay right).
Subclasses set ``self.bpf`` and ``self.reader`` in ``start`` and put their counters in
``live_stats`` (which must work before ``start`` too).
"""

from __future__ import annotations

from dnstrace.flow import Source


class BpfRingSource(Source):
    bpf = None  # the bcc.BPF object, None before start and after close
    reader = None  # dnstrace.kernel.ringbuf.RingBufReader on the "events" map
    _final_stats: dict | None = None

    def fds(self) -> list[int]:
        return [self.reader.fd] if self.reader is not None else []

    def live_stats(self) -> dict:
        return {}

    def stats(self) -> dict:
        if self._final_stats is not None:
            return dict(self._final_stats)
        return self.live_stats()

    def close(self) -> None:
        if self.bpf is None:
            return
        self._final_stats = self.live_stats()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.bpf.cleanup()
        self.bpf = None
