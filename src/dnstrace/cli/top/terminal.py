"""The terminal loop of ``dnstrace top``: raw keys in, a Rich frame out, once a second.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable

from dnstrace.cli.top.model import Snapshots
from dnstrace.cli.top.view import TopView
from dnstrace.log import status


def read_keys(fd: int, timeout_s: float) -> list[str]:
    """Keys pressed within ``timeout_s`` (escape sequences for arrows kept whole)."""
    ready, _, _ = select.select([fd], [], [], timeout_s)
    if not ready:
        return []
    data = os.read(fd, 64).decode("utf-8", "replace")
    keys, i = [], 0
    while i < len(data):
        if data[i] == "\x1b" and data[i + 1:i + 2] == "[" and i + 2 < len(data):
            keys.append(data[i:i + 3])
            i += 3
        else:
            keys.append(data[i])
            i += 1
    return keys


def interactive(model: Snapshots, by: str, should_stop: Callable[[], bool]) -> None:
    import shutil  # noqa: PLC0415
    import termios  # noqa: PLC0415
    import tty  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    view = TopView()
    view.by = by
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    console = Console(file=sys.stdout, highlight=False)

    def frame() -> Text:
        size = shutil.get_terminal_size((80, 24))
        snap = model.snapshot(view.by, view.window, view.detail_pid, full=False)
        text = Text(no_wrap=True, overflow="crop")
        for i, line in enumerate(view.render(snap, size.columns, size.lines - 1)):
            style = "bold reverse" if i == 0 else ("bold" if i == 1 and view.detail_pid is None else "")
            if line.startswith(("CRIT ", "WARN ")):
                style = "bold red" if line.startswith("CRIT") else "yellow"
            text.append(line + "\n", style=style or None)
        return text

    try:
        tty.setcbreak(fd)
        with Live(frame(), console=console, screen=True, auto_refresh=False) as live:
            next_refresh = time.monotonic() + 1.0
            while not view.quit and not should_stop():
                for key in read_keys(fd, max(0.0, next_refresh - time.monotonic())):
                    view.key(key)
                    live.update(frame(), refresh=True)
                if time.monotonic() >= next_refresh:
                    live.update(frame(), refresh=True)
                    next_refresh = time.monotonic() + 1.0
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    status("dnstrace top: stopped")
