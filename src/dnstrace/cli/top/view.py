"""What ``dnstrace top`` draws: the process table, the findings pane and the process detail, from a snapshot.

A pure function of the snapshot (``TopView.render``), so it is the same text in a terminal, in tmux and in tests.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class TopColumn:
    header: str
    field: str
    width: int
    key: str  # sort key
    numeric: bool = True


COLUMNS = (
    TopColumn("PID", "pid", 7, "p"),
    TopColumn("COMM", "comm", 12, "n", numeric=False),
    TopColumn("CONTAINER", "container", 8, "o", numeric=False),
    TopColumn("LK/S", "lookups_per_s", 5, "l"),
    TopColumn("P50", "p50_ns", 6, "5"),
    TopColumn("P99", "p99_ns", 6, "9"),
    TopColumn("MAX", "max_ns", 6, "m"),
    TopColumn("FAIL", "failures", 4, "f"),
    TopColumn("UNANS", "unanswered", 5, "u"),
    TopColumn("TC", "tc", 3, "t"),
    TopColumn("SYN", "syn_retries", 3, "y"),
    TopColumn("DROP", "drops", 4, "d"),
)
SORT_KEYS = {c.key: i for i, c in enumerate(COLUMNS)}
SEVERITY_MARK = {"critical": "CRIT", "warning": "WARN", "info": "INFO"}


def short_latency(ns) -> str:
    """At most 6 characters: 850µs, 12.3ms, 123ms, 5.00s, 12.3s, 123s."""
    if ns is None:
        return "-"
    if ns < 1e6:
        return f"{ns / 1e3:.0f}µs"
    if ns < 1e8:
        return f"{ns / 1e6:.1f}ms"
    if ns < 1e9:
        return f"{ns / 1e6:.0f}ms"
    if ns < 1e10:
        return f"{ns / 1e9:.2f}s"
    if ns < 1e11:
        return f"{ns / 1e9:.1f}s"
    return f"{ns / 1e9:.0f}s"


def cell(column: TopColumn, row: dict) -> str:
    value = row.get(column.field)
    if column.field.endswith("_ns"):
        text = short_latency(value)
    elif column.field == "lookups_per_s":
        text = "-" if value is None else (f"{value:.1f}" if value < 100 else f"{value:.0f}")
    elif value in (None, ""):
        text = "-"
    else:
        text = str(value)
    if len(text) > column.width:
        text = text[: column.width - 1] + "…"
    return text.rjust(column.width) if column.numeric else text.ljust(column.width)


def delivery_status(delivery: dict | None) -> str:
    """The embedded store's trouble for the status line ("" while it stores): one line, counted, so a
    failing store neither hides nor tears the view; the events wait in the spool."""
    transport = (delivery or {}).get("transport") or {}
    if not transport.get("failing"):
        return ""
    pending = ((delivery or {}).get("spool") or {}).get("pending_batches")
    spooled = f", {pending} batches kept in the spool" if pending is not None else ""
    return f"STORE FAILING ({transport.get('errors', 0)} errors{spooled}): {transport.get('last_error', '')}"


def loss_status(losses: dict | None) -> str:
    """The agent's own losses for the status line ("" when it lost nothing)."""
    if not losses or not losses.get("total"):
        return ""
    text = f"AGENT LOST {losses.get('lost', 0)} records/{losses.get('window_s', 60)}s"
    if losses.get("dns_lost"):
        text += f" ({losses['dns_lost']} DNS: findings from silence unreliable)"
    return text + f", {losses['total']} total"


class TopView:
    """Screen state (sort, filter, selection, mode) and rendering of a snapshot to lines."""

    def __init__(self):
        self.sort_index = SORT_KEYS["9"]  # worst p99 first
        self.reverse = True
        self.by = "process"
        self.window = "10s"
        self.filter = ""
        self.filter_input: str | None = None  # text being typed after '/'
        self.selected = 0
        self.detail_pid: int | None = None
        self.quit = False
        self._visible_rows: list[dict] = []

    # --- keys -------------------------------------------------------------------------

    def key(self, key: str) -> None:
        if self.filter_input is not None:
            if key in ("\r", "\n"):
                self.filter, self.filter_input, self.selected = self.filter_input, None, 0
            elif key == "\x1b":
                self.filter, self.filter_input = "", None
            elif key in ("\x7f", "\b"):
                self.filter_input = self.filter_input[:-1]
            elif key.isprintable() and len(key) == 1:
                self.filter_input += key
            return
        if self.detail_pid is not None:
            if key in ("\x1b", "\r", "\n", "\x7f", "\b", "q"):
                self.detail_pid = None
            return
        if key in ("q", "\x03"):
            self.quit = True
        elif key in SORT_KEYS:
            index = SORT_KEYS[key]
            self.reverse = not self.reverse if index == self.sort_index else COLUMNS[index].numeric
            self.sort_index = index
        elif key in ("<", ">"):
            self.sort_index = (self.sort_index + (1 if key == ">" else -1)) % len(COLUMNS)
        elif key == "r":
            self.reverse = not self.reverse
        elif key == "c":
            self.by = "container" if self.by == "process" else "process"
            self.selected = 0
        elif key == "w":
            self.window = "1m" if self.window == "10s" else "10s"
        elif key == "/":
            self.filter_input = ""
        elif key in ("\x1b[A", "k"):
            self.selected = max(0, self.selected - 1)
        elif key in ("\x1b[B", "j"):
            self.selected = min(max(0, len(self._visible_rows) - 1), self.selected + 1)
        elif key in ("\r", "\n") and self.by == "process" and self._visible_rows:
            row = self._visible_rows[min(self.selected, len(self._visible_rows) - 1)]
            if row.get("pid"):
                self.detail_pid = row["pid"]
        elif key == "\x1b":
            self.filter = ""

    # --- rendering ----------------------------------------------------------------------

    def sorted_rows(self, rows: list[dict]) -> list[dict]:
        column = COLUMNS[self.sort_index]
        needle = self.filter.lower()
        if needle:
            rows = [r for r in rows if needle in " ".join(str(r.get(k) or "") for k in
                                                           ("pid", "comm", "container", "pod", "namespace")).lower()]

        def sort_key(row):
            value = row.get(column.field)
            if column.numeric:
                return (value is not None, value or 0)
            return (value is not None, str(value or "").lower())

        return sorted(rows, key=sort_key, reverse=self.reverse)

    def render(self, snap: dict, width: int = 80, height: int = 24) -> list[str]:
        if self.detail_pid is not None:
            lines = self.render_detail(snap, width, height)
        else:
            lines = self.render_table(snap, width, height)
        lines = [line[:width] for line in lines][:height]
        return lines + [""] * (height - len(lines))

    def _findings_lines(self, snap: dict, width: int, room: int) -> list[str]:
        findings = snap.get("findings") or []
        lines = [f"── FINDINGS ({len(findings)}) " + "─" * max(0, width - 16)]
        if not findings:
            lines.append("  none: nothing wrong seen in the last minute")
        for f in findings:
            text = f"{SEVERITY_MARK.get(f.get('severity'), '?')} {f['rule']}: {f['summary']}"
            lines += textwrap.wrap(text, width=width, subsequent_indent="     ") or [""]
            if len(lines) >= room:
                break
        return lines[:room]

    def render_table(self, snap: dict, width: int, height: int) -> list[str]:
        column = COLUMNS[self.sort_index]
        arrow = "↓" if self.reverse else "↑"
        if snap.get("fleet"):
            mode = (f"{'process names (PID = hosts)' if self.by == 'process' else 'hosts'}, "
                    f"last {snap.get('window_label')}")
        else:
            mode = f"{'processes' if self.by == 'process' else 'containers'}, last {self.window}"
        attached = snap.get("signals") or ""
        header = f"dnstrace top · {snap.get('host', '')} · {mode} · sort {column.header}{arrow}"
        if self.filter_input is not None:
            header += f" · filter: {self.filter_input}_"
        elif self.filter:
            header += f" · filter '{self.filter}'"
        lines = [header, " ".join(c.header.rjust(c.width) if c.numeric else c.header.ljust(c.width)
                                  for c in COLUMNS)]
        findings_room = max(6, min(10, height // 3))
        table_room = max(1, height - 2 - findings_room - 1)
        rows = self.sorted_rows(snap.get("rows") or [])
        self._visible_rows = rows
        self.selected = min(self.selected, max(0, len(rows) - 1))
        start = max(0, self.selected - table_room + 1)
        for i, row in enumerate(rows[start:start + table_room], start):
            if self.by == "container":
                row = dict(row, pid=None, comm=row.get("pod") or "", container=row.get("container"))
            text = " ".join(cell(c, row) for c in COLUMNS)
            lines.append(("▶" if i == self.selected else " ") + text[1:] if i == self.selected else text)
        if not rows:
            lines.append("  (no activity yet" + (f" matching '{self.filter}'" if self.filter else "") + ")")
        while len(lines) < 2 + table_room:
            lines.append("")
        lines += self._findings_lines(snap, width, findings_room)
        while len(lines) < height - 1:
            lines.append("")
        status_line = (("keys: q quit  / filter  c container  w window  Enter detail  sort: "
                        "p n o l 5 9 m f u t y d  < > r") if attached != "attaching" else "attaching probes…")
        problems = [text for text in (delivery_status(snap.get("delivery")), loss_status(snap.get("agent_losses")))
                    if text]
        lines.append(" · ".join(problems + [status_line])[:width])
        return lines

    def render_detail(self, snap: dict, width: int, height: int) -> list[str]:
        detail = (snap.get("details") or {}).get(self.detail_pid) or (snap.get("details") or {}).get(
            str(self.detail_pid))
        pid = self.detail_pid
        if not detail:
            return [f"pid {pid}: no activity in the last minute", "", "Esc: back"]
        who = f"pid {pid} ({detail.get('comm')})"
        if detail.get("container"):
            who += f" container {detail['container']}"
        if detail.get("pod"):
            who += f" pod {detail.get('namespace') or ''}/{detail['pod']}"
        lines = [f"dnstrace top · {who} · last 1m · Esc back", ""]
        lines.append("resolv.conf: " + ", ".join(f"nameserver {n}" for n in detail.get("nameservers") or [])
                     + (f"; search {' '.join(detail['search'])}" if detail.get("search") else "")
                     + (f"; options {' '.join(detail['resolv_options'])}" if detail.get("resolv_options") else ""))
        lines.append(f"lookups {detail.get('lookups')}  p50 {short_latency(detail.get('p50_ns'))}  "
                     f"p99 {short_latency(detail.get('p99_ns'))}  max {short_latency(detail.get('max_ns'))}  "
                     f"failures {detail.get('failures')}  unanswered {detail.get('unanswered')}  "
                     f"TC {detail.get('tc')}  SYN {detail.get('syn_retries')}")
        lines.append("nameserver health (whole node):")
        servers = {s["server"]: s for s in snap.get("servers") or []}
        for ns in detail.get("nameservers") or sorted(servers):
            s = servers.get(ns)
            if s is None:
                lines.append(f"  {ns:<16} no queries seen")
            else:
                lines.append(f"  {ns:<16} {s['queries']} queries, {s['answered']} answered, "
                             f"{s['unanswered']} unanswered, TC {s['tc']}, p50 {short_latency(s['p50_ns'])}")
        lines += self._waterfall_lines(detail.get("slowest") or [], detail, width)
        mine = [f for f in snap.get("findings") or [] if pid in (f.get("pids") or [])]
        lines.append("")
        lines += self._findings_lines({"findings": mine}, width, max(3, height - len(lines) - 1))
        return lines

    @staticmethod
    def _waterfall_lines(slowest: list[dict], detail: dict, width: int) -> list[str]:
        """Slowest recent lookups, each as the waterfall of its attempts (``dnstrace.waterfall``)."""
        from dnstrace.waterfall import waterfall_lines  # noqa: PLC0415

        lines = ["slowest recent lookups:"]
        timeouts = [o.split(":", 1)[1] for o in detail.get("resolv_options") or [] if o.startswith("timeout:")]
        conf = {"timeout": float(timeouts[0])} if timeouts and timeouts[0].replace(".", "", 1).isdigit() else None
        for slow in slowest:
            lookup = dict(slow, resolv_conf=conf) if conf else slow
            lines += [("  " + line)[:width] for line in waterfall_lines(lookup, bar_width=12)]
        return lines
