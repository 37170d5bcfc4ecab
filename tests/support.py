"""Helpers shared by test modules (import as ``from support import ...``; tests/ is on pythonpath).

Kept out of conftest.py on purpose: several conftest modules exist (tests/, tests/collector/)
and ``from conftest import`` would pick whichever was imported last.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dnstrace.events import undeclared_fields

REPO = Path(__file__).resolve().parent.parent
DNSTRACE = [sys.executable, "-m", "dnstrace"]


def under_ci() -> bool:
    """CI systems set ``CI`` (to "true", "1", ...); unset, empty, "0", "false" or "no" is a developer's run."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(prereq_ok: bool, reason: str) -> None:
    """Skip the calling test or fixture unless ``prereq_ok``; under CI, fail it instead, saying why.

    Use this (not ``pytest.skip``) for every prerequisite of a test tier CI must run:
    root/bcc/headers for kernel tests, clickhouse-server, Chromium.
    """
    if prereq_ok:
        return
    if under_ci():
        pytest.fail(f"CI is set, so this test tier must run, but a prerequisite is missing: {reason}",
                    pytrace=False)
    pytest.skip(reason)


def kernel_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (BPF programs and network namespaces)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not importable (apt-get install python3-bpfcc; venv with --system-site-packages)"
    if not Path(f"/lib/modules/{os.uname().release}/build").exists():
        return "no kernel headers for bcc (scripts/dev setup installs the fallback)"
    if not shutil.which("ip"):
        return "iproute2 is missing"
    return None


class TraceProcess:
    """A running ``dnstrace trace ... --json``; events are collected from its stdout."""

    def __init__(self, argv: list[str], ready_timeout_s: float = 60.0):
        self.argv = argv
        self.proc = subprocess.Popen(
            DNSTRACE + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.events: list[dict] = []
        self.undeclared: set[tuple[str, str]] = set()  # (kind, field) the vocabulary does not name
        self.stderr_lines: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._ready.wait(ready_timeout_s):
            self.stop()
            raise AssertionError(f"dnstrace {' '.join(argv)} never attached:\n" + "".join(self.stderr_lines))

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                event = json.loads(line)
                with self._lock:
                    self.events.append(event)
                    self.undeclared.update((str(event.get("kind")), name) for name in undeclared_fields(event))

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if "attached" in line:
                self._ready.set()
        self._ready.set()  # process ended: stop waiting (the caller sees no events / exit code)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def wait_for(self, predicate, timeout_s: float = 15.0) -> list[dict]:
        """Wait until some events satisfy ``predicate``; returns the matching ones."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            matching = [e for e in self.snapshot() if predicate(e)]
            if matching:
                return matching
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        return [e for e in self.snapshot() if predicate(e)]

    def stop(self, sig=signal.SIGINT, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.1)  # let the reader threads finish
        with self._lock:
            undeclared, self.undeclared = sorted(self.undeclared), set()
        # Every field the kernel path emitted is named by dnstrace.events (and so by docs/events.md).
        assert not undeclared, f"fields dnstrace.events does not declare, as (kind, field): {undeclared}"
        return self.proc.returncode


def lingering_lookup(name: str) -> list[str]:
    """getaddrinfo(name) in a process that stays alive a moment afterwards.

    The agent reads a process's resolv.conf through /proc/PID/root; a resolver that
    exits within a millisecond of its answer (getent) can be gone before that read on a
    loaded machine. Long-running services, the real subjects, do not race like this."""
    code = (f"import socket, time\ntry: socket.getaddrinfo({name!r}, None)\n"
            "except socket.gaierror: pass\ntime.sleep(1)")
    return [sys.executable, "-c", code]


FAKE_RING_PAGE = 64  # the fake rings' "page": where the data area starts in the producer area


def fake_ring(records: list[tuple[int, bytes]], data_size: int = 1024, start_pos: int = 0):
    """A BPF ring buffer as the kernel maps it, in plain memory: (producer area = page + data
    twice, consumer area, producer position), holding ``records`` as (header flags, payload)."""
    data = bytearray(data_size)
    pos = start_pos
    for flags, payload in records:
        blob = struct.pack("<II", len(payload) | flags, 0) + payload
        for i, byte in enumerate(blob):
            data[(pos + i) % data_size] = byte
        pos += (len(blob) + 7) & ~7
    producer = bytearray(FAKE_RING_PAGE) + data + data
    struct.pack_into("<Q", producer, 0, pos)
    consumer = bytearray(8)
    struct.pack_into("<Q", consumer, 0, start_pos)
    return bytes(producer), consumer, pos


def fake_ring_reader(data_size: int):
    """The attributes of a RingBufReader that ``drain_buffer`` reads, for a fake ring."""
    from types import SimpleNamespace

    return SimpleNamespace(_page=FAKE_RING_PAGE, _mask=data_size - 1, records=0, malformed=0)


def click_and_wait(driver, element, timeout_s: float = 20.0) -> None:
    """Selenium: click a link or form button and wait until the page it leads to has loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    element.click()
    WebDriverWait(driver, timeout_s).until(lambda d: d.find_element("tag name", "html") != old)
    WebDriverWait(driver, timeout_s).until(lambda d: d.execute_script("return document.readyState") == "complete")
