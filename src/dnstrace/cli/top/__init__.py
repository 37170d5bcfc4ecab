"""``dnstrace top``: the live view. command (flags, runs), model (snapshots), view (text), terminal (keys, frames)."""

from dnstrace.cli.top.command import register, run

__all__ = ["register", "run"]
