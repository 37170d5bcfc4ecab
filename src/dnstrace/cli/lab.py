"""``dnstrace lab NAME``: reproduce a seed incident in throwaway namespaces until Ctrl-C or --duration.

Run it in one terminal and ``dnstrace top`` or ``dnstrace findings`` in another to
see what dnstrace shows for the incident before meeting it for real. Everything it
builds is removed on exit, Ctrl-C and SIGTERM alike.
"""

from __future__ import annotations

import argparse
import signal
import threading

from dnstrace.errors import UsageError
from dnstrace.log import status
from dnstrace.units import parse_duration_s


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lab", help="reproduce a seed incident in throwaway network namespaces (dnstrace lab --list)",
        description="Build one of the incidents dnstrace was made for in throwaway network namespaces and "
                    "keep generating its traffic until Ctrl-C or --duration; everything is removed on exit. "
                    "Watch it with 'dnstrace top' or 'dnstrace findings' in another terminal. Needs root.",
        epilog="examples:\n  dnstrace lab --list\n  dnstrace lab dead-nameserver --duration 2m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="incident to reproduce (see --list)")
    parser.add_argument("--list", action="store_true", help="list the incidents and exit")
    parser.add_argument("--duration", default=None, metavar="DUR", help="stop after this long (default: Ctrl-C)")
    parser.set_defaults(func=run)


def list_incidents() -> None:
    from dnstrace.lab.incidents import INCIDENTS  # noqa: PLC0415

    width = max(len(i.name) for i in INCIDENTS)
    for incident in INCIDENTS:
        print(f"{incident.name.ljust(width)}  seed {incident.seed:>3}  {incident.title}")
        print(f"{''.ljust(width)}  shows: {incident.shows}; findings: {', '.join(incident.rules) or 'none expected'}")


def run(args: argparse.Namespace) -> int:
    from dnstrace.lab.incidents import BY_NAME  # noqa: PLC0415

    if args.list:
        list_incidents()
        return 0
    if not args.name:
        raise UsageError("which incident? give a NAME", hint="dnstrace lab --list")
    incident = BY_NAME.get(args.name)
    if incident is None:
        raise UsageError(f"no incident named {args.name!r}", hint="known: " + ", ".join(BY_NAME))
    duration_s = parse_duration_s(args.duration) if args.duration else None
    from dnstrace.kernel.load import require_privileges  # noqa: PLC0415
    from dnstrace.lab.netns import Lab  # noqa: PLC0415

    require_privileges()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Lab() as lab:
            status(f"dnstrace lab: building {incident.name} (seed {incident.seed}): {incident.title}")
            running = incident.build(lab)
            for line in running.setup:
                status(f"  {line}")
            status(f"dnstrace lab: running: pid {running.pid} ({running.comm}); expect findings "
                   f"{', '.join(incident.rules) or 'none'} (signals: {', '.join(incident.signals)}). "
                   f"Ctrl-C to stop and clean up")
            stop.wait(duration_s)
            if running.client.poll() is not None:
                status(f"dnstrace lab: the client exited early (code {running.client.returncode})")
            if running.report is not None:
                try:
                    for line in running.report():
                        status(f"  {line}")
                except Exception as err:  # the report is a courtesy: cleanup must still happen
                    status(f"  (no report: {type(err).__name__}: {err})")
            status("dnstrace lab: cleaning up")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status("dnstrace lab: removed everything it built")
    return 0
