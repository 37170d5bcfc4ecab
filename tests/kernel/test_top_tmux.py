"""``dnstrace top`` in a real 80x24 terminal (tmux) during a lab incident: the suffering process shows
with its latency, the finding text is on screen, and the sort and filter keys work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from dnstrace.lab.incidents import BY_NAME
from dnstrace.lab.netns import Lab


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_screen(session: str, predicate, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    text = screen(session)
    while time.monotonic() < deadline:
        text = screen(session)
        if predicate(text):
            return text
        time.sleep(0.3)
    return text


def table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("── FINDINGS")), len(lines))
    return [line for line in lines[2:end] if line.strip()]


def test_top_in_tmux_during_dead_nameserver(kernel):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    session = f"dt-top-{int(time.time() * 1000) % 100000}"
    with Lab() as lab:
        running = BY_NAME["dead-nameserver"].build(lab)
        cmd = f"{sys.executable} -m dnstrace top --signals lookups,tcp 2>/tmp/{session}.err"
        tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd)
        try:
            def ready(t: str) -> bool:
                rows = [line for line in table_lines(t) if str(running.pid) in line]
                return "dead-nameserver" in t and bool(rows) and "1.0" in rows[0]

            text = wait_screen(session, ready, 60)
            assert "kafka-writer" in text, text
            row = next(line for line in table_lines(text) if str(running.pid) in line)
            assert "kafka-writer" in row and "1.0" in row, row  # p50/p99/max at the 1 s timeout
            assert "nameserver" in text and "10.53.0.9" in text and "never answered" in text
            assert all(len(line) <= 80 for line in text.splitlines())

            # sort by COMM ascending ('n'), then filter to our process
            tmux("send-keys", "-t", session, "n")
            text = wait_screen(session, lambda t: "sort COMM" in t, 5)
            comms = [line.split()[1] for line in table_lines(text) if line.split()[0].lstrip("▶").isdigit()]
            assert comms == sorted(comms, key=str.lower) or comms == sorted(comms, key=str.lower, reverse=True)
            tmux("send-keys", "-t", session, "/", "kafka", "Enter")
            text = wait_screen(session, lambda t: "filter 'kafka'" in t, 5)
            rows = table_lines(text)
            assert rows and all("kafka" in r for r in rows), rows

            # Enter opens the process detail: its resolv.conf and the slowest lookups
            tmux("send-keys", "-t", session, "Enter")
            text = wait_screen(session, lambda t: "resolv.conf:" in t, 5)
            assert "nameserver 10.53.0.9" in text and "slowest recent lookups" in text, text
            tmux("send-keys", "-t", session, "Escape")
            tmux("send-keys", "-t", session, "q")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and session in tmux("list-sessions"):
                time.sleep(0.2)
        finally:
            tmux("kill-session", "-t", session)
