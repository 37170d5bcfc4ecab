"""Structured logging (structlog) to stderr: ``console`` for people, ``json`` for machines.

stdout belongs to the data a command prints (events, tables, JSON); every log and
status line goes to stderr so scripts can pipe stdout safely.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

_configured = False


def configure(fmt: str = "console", level: str = "info") -> None:
    """Set up structlog once per process. ``fmt`` is ``console`` or ``json``."""
    global _configured
    level_no = logging.getLevelName(level.upper())
    if not isinstance(level_no, int):
        level_no = logging.INFO
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),  # write + flush is all it uses
        cache_logger_on_first_use=False,
    )
    _configured = True


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at write time, so ``contextlib.redirect_stderr`` also catches log lines
    (``top`` keeps them off its screen that way)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def get(name: str | None = None):
    """A logger; configures console logging on first use if nobody did."""
    if not _configured:
        configure()
    return structlog.get_logger(name) if name else structlog.get_logger()


def status(message: str) -> None:
    """A status line for people and scripts watching stderr."""
    print(message, file=sys.stderr, flush=True)
