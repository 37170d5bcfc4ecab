"""Errors a user can act on: one clear line, a hint, and an exit code (never a traceback)."""

from __future__ import annotations

# Exit codes shared by every subcommand.
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and found a problem / failed at run time
EXIT_USAGE = 2  # bad flags, bad config, bad input
EXIT_ENVIRONMENT = 3  # the node cannot run this: not root, no bcc, no headers, no tracefs


class DnstraceError(Exception):
    """An error with a message for humans and, where there is one, a fix."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(DnstraceError):
    """Bad flags, configuration or input."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(DnstraceError):
    """The node lacks something dnstrace needs (privileges, bcc, headers, a kernel feature)."""

    exit_code = EXIT_ENVIRONMENT
