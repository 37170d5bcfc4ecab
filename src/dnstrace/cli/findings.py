"""``dnstrace findings``: watch this node for a while (or read a recorded stream), print named causes with fixes.

Also home of the *local session* that ``dnstrace top`` shares: the agent's
pipeline with only in-process stages (aggregator, findings engine; nothing shipped,
optionally the metrics sink), behind one lock so a UI thread can read consistent
snapshots.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from dnstrace.cli.output import to_json
from dnstrace.errors import UsageError
from dnstrace.flow import Sink, Stage
from dnstrace.log import status
from dnstrace.units import parse_duration_s

SEVERITY_MARK = {"critical": "CRIT", "warning": "WARN", "info": "INFO"}


class LockedSinks(Stage):
    """Fans events out to sinks under one lock, so readers (the top view) see a consistent state.

    A stage: what its members derive in ``tick`` (findings) goes on to the pipeline's sinks."""

    name = "local"

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks
        self.lock = threading.Lock()

    def handle(self, events: list[dict]) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.handle(events)

    def bind(self, sinks: list[Sink]) -> None:
        for member in self.sinks:
            if hasattr(member, "bind"):
                member.bind(sinks)

    def tick(self, now_ns: int) -> list[dict]:
        derived: list[dict] = []
        with self.lock:
            for sink in self.sinks:
                derived += sink.tick(now_ns) or []
        return derived

    def flush(self) -> list[dict]:
        derived: list[dict] = []
        with self.lock:
            for sink in self.sinks:
                if hasattr(sink, "flush"):
                    derived += sink.flush() or []
        return derived

    def stats(self) -> dict:
        with self.lock:
            return {sink.name: sink.stats() for sink in self.sinks}

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def make_local_pipeline(config, stages: list[Sink], with_metrics: bool = False, as_agent: bool = False):
    """A Pipeline feeding ``stages``. Interactive tools ship nothing unless ``as_agent``
    (then every default sink runs: the shipper to the configured or embedded collector, metrics).

    With ``with_metrics`` the metrics sink runs too (when ``agent.metrics_addr`` is set)."""
    from dnstrace.pipeline.runner import METRICS_MODULE, SINK_MODULES, Pipeline  # noqa: PLC0415

    sink_modules: tuple[str, ...]
    if as_agent:
        sink_modules = SINK_MODULES
    else:
        sink_modules = (METRICS_MODULE,) if with_metrics else ()
    return Pipeline(config, stages=stages, sink_modules=sink_modules)


def format_finding(finding: dict) -> str:
    mark = SEVERITY_MARK.get(str(finding.get("severity")), "?")
    lines = [f"[{mark}] {finding['rule']}: {finding['summary']}", f"    fix: {finding['fix']}"]
    evidence = finding.get("evidence") or {}
    if evidence:
        lines.append("    evidence: " + json.dumps(evidence, default=str, separators=(", ", ": ")))
    return "\n".join(lines)


def register(subparsers) -> None:
    from dnstrace.cli.agent import TRACING_KEYS, add_config_arguments  # noqa: PLC0415

    parser = subparsers.add_parser(
        "findings", help="watch this node for a while and print named causes with fixes",
        description="Trace every configured signal for --duration, then print what the rules found: the "
                    "cause in words, the evidence (counts, addresses, pids, the resolv.conf line) and a fix. "
                    "With --from, read a recorded stream (dnstrace trace ... --json) instead of tracing.",
        epilog="examples:\n  dnstrace findings --duration 30s\n  dnstrace findings --duration 1m --json\n"
               "  dnstrace trace dns --json --duration 1m > dns.jsonl; dnstrace findings --from dns.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", default="30s", metavar="DUR", help="how long to watch (default 30s)")
    parser.add_argument("--json", action="store_true", help="one JSON finding per line on stdout")
    parser.add_argument("--from", dest="from_file", metavar="FILE",
                        help="evaluate a recorded JSON-lines event stream ('-' = stdin) instead of tracing")
    parser.add_argument("--live", action="store_true", help="also print each finding as soon as it appears")
    add_config_arguments(parser, "agent", only=TRACING_KEYS)
    parser.set_defaults(func=run)


def read_recorded(path: str) -> list[dict]:
    stream = sys.stdin if path == "-" else None
    try:
        handle = stream or open(path, encoding="utf-8", errors="replace")
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    events = []
    with handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}:{number}: not a JSON event line") from None
            if not isinstance(event, dict):
                raise UsageError(f"{path}:{number}: not a JSON object")
            events.append(event)
    return events


def print_findings(findings: list[dict], as_json: bool) -> None:
    if as_json:
        for finding in findings:
            print(to_json(finding))
        return
    if not findings:
        print("no findings: nothing looked wrong in what was traced")
        return
    for finding in findings:
        print(format_finding(finding))


def run(args: argparse.Namespace) -> int:
    from dnstrace.findings.engine import FindingsEngine, evaluate  # noqa: PLC0415

    if args.from_file:
        events = read_recorded(args.from_file)
        findings = [f.event(max((e.get("ts") or 0 for e in events), default=0)) for f in evaluate(events)]
        print_findings(findings, args.json)
        return 0
    from dnstrace.cli.agent import config_from_args  # noqa: PLC0415
    from dnstrace.kernel.load import require_privileges  # noqa: PLC0415

    duration_s = parse_duration_s(args.duration)
    if duration_s <= 0:
        raise UsageError("--duration must be positive")
    config = config_from_args(args, "agent")
    engine = FindingsEngine(host=config["agent.host_id"])
    if args.live:
        engine.on_finding = lambda f: (print(to_json(f) if args.json else format_finding(f), flush=True))
    pipeline = make_local_pipeline(config, [engine])
    require_privileges()
    status(f"dnstrace: watching for {args.duration} (signals: {', '.join(pipeline.signals)})")

    def on_ready() -> None:
        engine.gai_traced = "gai" in pipeline.attached_signals or "lookups" in pipeline.attached_signals

    pipeline.run(duration_s=duration_s, on_ready=on_ready)
    engine.evaluate()
    if not args.live:
        print_findings(engine.current(), args.json)
    return 0
