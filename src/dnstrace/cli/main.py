"""The ``dnstrace`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed args, returns an exit code). Modules import
heavy dependencies (bcc, duckdb, grpc) inside their functions so ``--help`` stays
fast and works on a node without them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from dnstrace import __version__, log
from dnstrace.errors import EXIT_FAILURE, EXIT_USAGE, DnstraceError

# (module, one-line help shown in ``dnstrace --help``), in the order users need them.
SUBCOMMAND_MODULES = (
    "dnstrace.cli.doctor",
    "dnstrace.cli.trace",
    "dnstrace.cli.agent",
    "dnstrace.cli.top",
    "dnstrace.cli.findings",
    "dnstrace.cli.lab",
    "dnstrace.cli.collector",
    "dnstrace.cli.query",
)

EPILOG = """\
typical use on a suspect node (as root):
  dnstrace doctor                      can this node run the agent? what is missing?
  dnstrace top                         live view: which process suffers and why
  dnstrace trace gai --min-latency 1s  slow getaddrinfo calls as they happen
  dnstrace findings --duration 30s     watch for 30 s, print named causes with fixes
  dnstrace query --since 10m --kind dns --json   ask the recorded traces
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnstrace",
        description="Find out why name resolution and connection setup are slow or failing, per process.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dnstrace {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an unexpected error, print the full traceback after the one-line error")
    parser.add_argument("--log-format", choices=("console", "json"), default=None,
                        help="log line format on stderr (default: console, or the config file's)")
    parser.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"),
                        help="least severe log level shown (default: info, or the config file's)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.configure(args.log_format or "console", args.log_level or "info")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except DnstraceError as err:
        print(f"dnstrace: error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"dnstrace: hint: {err.hint}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    except Exception as err:  # a bug or an unforeseen condition: still one line, still an exit code
        detail = str(err).splitlines()[0] if str(err) else ""
        print(f"dnstrace: error: unexpected {type(err).__name__}"
              f"{': ' + detail if detail else ''} in '{args.command}'", file=sys.stderr)
        if getattr(args, "debug", False):
            traceback.print_exc(file=sys.stderr)
        else:
            print("dnstrace: hint: run again with --debug for the traceback, and report it", file=sys.stderr)
        return EXIT_FAILURE
