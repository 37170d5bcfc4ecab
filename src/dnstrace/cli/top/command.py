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
import sys
import threading

from dnstrace.cli.top.model import FleetModel, TopModel
from dnstrace.cli.top.terminal import interactive
from dnstrace.cli.top.view import TopView, delivery_status
from dnstrace.errors import UsageError
from dnstrace.log import status
from dnstrace.units import parse_duration_s


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
            interactive(model, args.by, lambda: bool(failure) or not thread.is_alive())
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
