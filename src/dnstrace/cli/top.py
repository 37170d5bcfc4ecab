"""``dnstrace top``: a live full-screen view of which process suffers and why, refreshed every second.

One row per process (``c`` toggles one row per container): PID, COMM, CONTAINER,
lookups/s, p50, p99, max, failures, unanswered queries, TC answers, SYN retries,
drops over the last 10 s (``w``: last minute). A findings pane is always visible at
the bottom. Keys: sort by a column with its letter (shown under the table; again =
reverse), ``<``/``>`` move the sort column, ``/`` filters by name/container/pid,
up/down (or j/k) select, Enter opens the process detail (its resolv.conf,
nameserver health, slowest recent lookups with their attempts), Esc goes back,
``q`` quits. Fits 80x24 over SSH; rendering goes through Rich.

``--once --json`` traces for ``--duration`` and prints one snapshot for scripts.

``--collector ADDR`` (given on the command line) shows the fleet instead of this node:
rows per process name (``c``: per host) over the last 5 minutes (``w``: last hour),
with the number of hosts, from the collector's ``top`` and ``findings`` queries,
refreshed every ``--refresh`` seconds (5). Nothing is traced locally and no root is needed.
The view itself (``TopView.render``) is a pure function of a snapshot, so it is
the same text in a terminal, in tmux and in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dnstrace.errors import UsageError
from dnstrace.log import status
from dnstrace.units import parse_duration_s


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


class TopModel:
    """The aggregator and findings engine behind one lock; ``snapshot()`` is what the view shows."""

    def __init__(self, host: str = ""):
        from dnstrace.cli.findings import LockedSinks  # noqa: PLC0415
        from dnstrace.findings.engine import FindingsEngine  # noqa: PLC0415
        from dnstrace.sinks.aggregate import Aggregator  # noqa: PLC0415

        self.host = host
        self.aggregator = Aggregator()
        self.findings = FindingsEngine(host=host)
        self.sinks = LockedSinks([self.aggregator, self.findings])
        self.signals = "attaching"
        self.delivery_stats: Callable[[], dict] | None = None  # the shipper's stats under `top --agent`

    def snapshot(self, by: str = "process", window: str = "10s", detail_pid: int | None = None,
                 full: bool = True) -> dict:
        """What the view shows. ``full=False`` (the table screen, every second) leaves out the
        nameserver rows, which only the detail screen and ``--once`` show: they cost a third of a refresh."""
        with self.sinks.lock:
            rows = self.aggregator.rows(by, window)
            details = {}
            if detail_pid is not None:
                details[detail_pid] = self.aggregator.process_detail(detail_pid)
            servers = self.aggregator.server_rows() if full or detail_pid is not None else []
            return {"ts": time.time_ns(), "host": self.host, "by": by, "window": window, "signals": self.signals,
                    "rows": rows, "findings": self.findings.current(), "servers": servers,
                    "node": self.aggregator.node_view(), "details": details,
                    "agent_losses": self.aggregator.agent_losses(),
                    "delivery": self.delivery_stats() if self.delivery_stats is not None else None,
                    "stats": {"aggregate": self.aggregator.stats(), "findings": self.findings.stats()}}


FLEET_WINDOWS_S = {"10s": 300, "1m": 3600}  # the view's two windows, stretched for shipped data
FLEET_LOOKUP_KINDS = ("lookup", "gai")  # the first kind the collector has rows for is the lookups


class FleetModel:
    """The fleet view's data: collector queries per process name (or host) and the fleet's findings.

    ``snapshot()`` has the shape ``TopView`` renders: a row's PID column holds the number
    of hosts, CONTAINER the host (per-host rows) or "N hosts"."""

    def __init__(self, client, refresh_s: float = 5.0, clock=time.time_ns):
        self.client = client
        self.refresh_s = refresh_s
        self.clock = clock
        self.signals = "fleet"
        self.error = ""
        self._cache: dict[tuple, tuple[float, dict]] = {}

    def _query(self, **spec_fields) -> list[dict]:
        from dnstrace.wire.query import QuerySpec  # noqa: PLC0415

        _, rows = self.client.query(QuerySpec(**spec_fields))
        return rows

    def _build(self, by: str, window: str) -> dict:
        window_s = FLEET_WINDOWS_S.get(window, 300)
        since = self.clock() - window_s * 1_000_000_000
        group = "comm" if by == "process" else "host"
        lookups = []
        for kind in FLEET_LOOKUP_KINDS:
            lookups = self._query(mode="top", kinds=[kind], since_ns=since, group_by=group, limit=200)
            if lookups:
                break
        rows = {}
        for r in lookups:
            rows[r[group]] = {"pid": r["hosts"], "comm": r[group] if group == "comm" else "",
                              "container": (f"{r['hosts']} hosts" if group == "comm" else r[group]),
                              "lookups": r["count"], "lookups_per_s": r["count"] / window_s,
                              "p50_ns": r["p50_ns"], "p99_ns": r["p99_ns"], "max_ns": r["max_ns"],
                              "failures": r["failures"]}
        for kind, field in (("dns", "unanswered"), ("syn_retry", "syn_retries"), ("drop", "drops")):
            spec = {"mode": "top", "kinds": [kind], "since_ns": since, "group_by": group, "order_by": "count",
                    "limit": 200}
            if kind == "dns":
                spec["failed_only"] = True  # unanswered and error rcodes: what went wrong on the wire
            for r in self._query(**spec):
                row = rows.setdefault(r[group], {"pid": r["hosts"], "comm": r[group] if group == "comm" else "",
                                                 "container": (f"{r['hosts']} hosts" if group == "comm"
                                                               else r[group])})
                row[field] = r["count"]
        findings = []
        for f in self._query(mode="findings", since_ns=since, limit=50):
            hosts = ", ".join(f.get("host_list") or [])
            findings.append({"rule": f["rule"], "severity": f.get("severity"), "pids": [],
                             "summary": f"on {f['hosts']} host(s) ({hosts}), {f['count']} reports: "
                                        f"{f.get('summary') or ''}", "fix": f.get("fix")})
        return {"ts": self.clock(), "host": f"fleet via {self.client.address}", "by": by, "window": window,
                "fleet": True, "window_label": f"{window_s // 60}m" if window_s < 3600 else f"{window_s // 3600}h",
                "signals": self.signals, "rows": list(rows.values()), "findings": findings, "servers": [],
                "node": {}, "details": {}}

    def snapshot(self, by: str = "process", window: str = "10s", detail_pid=None, full: bool = False) -> dict:
        """The latest fleet snapshot; queries the collector again once ``refresh_s`` has passed."""
        from dnstrace.errors import DnstraceError  # noqa: PLC0415

        key = (by, window)
        cached = self._cache.get(key)
        if cached is None or time.monotonic() - cached[0] >= self.refresh_s:
            try:
                snap = self._build(by, window)
                self.error = ""
            except DnstraceError as err:  # unreachable collector: keep the last rows, say why
                self.error = err.message
                if cached is None:
                    raise
                snap = dict(cached[1])
            self._cache[key] = (time.monotonic(), snap)
            cached = self._cache[key]
        snap = dict(cached[1])
        if self.error:
            snap["host"] = f"{snap['host']} (stale: {self.error})"
        return snap


def register(subparsers) -> None:
    from dnstrace.cli.agent import add_config_arguments  # noqa: PLC0415

    parser = subparsers.add_parser(
        "top", help="live view: which process suffers and why (findings pane, process detail)",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  dnstrace top\n  dnstrace top --once --json --duration 5s | jq '.rows[0]'",
    )
    parser.add_argument("--once", action="store_true", help="trace for --duration, print one snapshot, exit")
    parser.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")
    parser.add_argument("--duration", default="3s", metavar="DUR", help="with --once: how long to trace (3s)")
    parser.add_argument("--by", choices=("process", "container"), default="process", help="one row per ...")
    parser.add_argument("--agent", action="store_true",
                        help="also be this node's agent: take the agent lock and record every event and finding "
                             "in the collector (the embedded one unless agent.collector is set), so "
                             "'dnstrace query' can ask about them; what 'scripts/dev run' starts")
    parser.add_argument("--refresh", default="5s", metavar="DUR",
                        help="with --collector: how often to query the collector (5s)")
    parser.add_argument("--token", default=None, help="with --collector: the query token "
                                                      "(config query.token, $DNSTRACE_QUERY_TOKEN)")
    add_config_arguments(parser, "agent")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnstrace.cli.agent import config_from_args, node_lock  # noqa: PLC0415
    from dnstrace.cli.findings import make_local_pipeline  # noqa: PLC0415
    from dnstrace.kernel.load import require_privileges  # noqa: PLC0415

    if args.json and not args.once:
        raise UsageError("--json needs --once (the live view is for terminals)")
    duration_s = parse_duration_s(args.duration)
    config = config_from_args(args, "agent")
    if getattr(args, "cfg_agent_collector", None):  # --collector on the command line: the fleet view
        return run_fleet(args, config)
    model = TopModel(host=config["agent.host_id"])
    pipeline = make_local_pipeline(config, [model.sinks], with_metrics=True, as_agent=args.agent)
    require_privileges()
    if args.agent:
        lock = node_lock(config).acquire()
        try:
            return _run_view(args, model, pipeline, duration_s)
        finally:
            lock.release()
    return _run_view(args, model, pipeline, duration_s)


def _run_view(args: argparse.Namespace, model: TopModel, pipeline, duration_s: float) -> int:

    def delivery_stats() -> dict | None:
        shipper = next((sink for sink in list(pipeline.sinks) if sink.name == "shipper"), None)
        return shipper.stats() if shipper is not None else None

    model.delivery_stats = delivery_stats

    def on_ready() -> None:
        model.signals = ", ".join(pipeline.attached_signals)
        model.findings.gai_traced = "gai" in pipeline.attached_signals or "lookups" in pipeline.attached_signals

    if args.once:
        pipeline.run(duration_s=duration_s, on_ready=on_ready)
        model.findings.evaluate()
        snap = model.snapshot(args.by, "10s")
        snap.pop("details")
        print_snapshot(snap, args.by, args.json)
        return 0
    if not sys.stdin.isatty():
        raise UsageError("dnstrace top needs a terminal", hint="use --once --json in scripts")
    failure: list[BaseException] = []

    def run_pipeline() -> None:
        try:
            pipeline.run(on_ready=on_ready)
        except BaseException as err:  # shown after the screen is restored
            failure.append(err)

    thread = threading.Thread(target=run_pipeline, name="pipeline", daemon=True)
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415
    import signal  # noqa: PLC0415

    # The pipeline runs in a thread, so SIGTERM is ours to route: stop it (probes detached,
    # spool flushed) and let the view end.
    signal.signal(signal.SIGTERM, lambda *_: pipeline.stop())

    stderr_buffer = io.StringIO()
    with contextlib.redirect_stderr(stderr_buffer):  # keep log lines from tearing the screen
        thread.start()
        try:
            interactive(model, args.by, lambda: failure or not thread.is_alive())
        finally:
            pipeline.stop()
            thread.join(timeout=15)
    trouble = delivery_status(delivery_stats())
    if trouble:  # the screen is gone: say it once where it stays
        status(f"dnstrace top: {trouble}")
    if failure:
        raise failure[0]
    return 0


def print_snapshot(snap: dict, by: str, as_json: bool) -> None:
    """``--once``: the snapshot as JSON, or the screen an 80x24 terminal would show."""
    if as_json:
        print(json.dumps(snap, default=str))
        return
    view = TopView()
    view.by = by
    print("\n".join(line.rstrip() for line in view.render(snap, 80, 24)).rstrip())


def run_fleet(args: argparse.Namespace, config) -> int:
    from dnstrace.wire.client import query_client  # noqa: PLC0415

    refresh_s = parse_duration_s(args.refresh)
    if refresh_s <= 0:
        raise UsageError("--refresh must be positive")
    client = query_client(config, config["agent.collector"].split(",")[0], args.token)  # any replica answers
    try:
        model = FleetModel(client, refresh_s=refresh_s)
        if args.once:
            print_snapshot(model.snapshot(args.by, "10s"), args.by, args.json)
            return 0
        if not sys.stdin.isatty():
            raise UsageError("dnstrace top needs a terminal", hint="use --once --json in scripts")
        model.snapshot(args.by, "10s")  # fail now (one line) if the collector is unreachable
        interactive(model, args.by, lambda: False)
    finally:
        client.close()
    return 0


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


def interactive(model: TopModel, by: str, should_stop) -> None:
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
