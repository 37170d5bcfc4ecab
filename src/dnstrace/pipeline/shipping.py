"""The agent's shipping sink, wired: the shipper, and the embedded collector when no remote one is set.

``dnstrace.ship`` never imports the collector; this module is where the two meet.
"""

from __future__ import annotations

from typing import Any

from dnstrace.ship.shipper import Shipper


def make_sink(config: Any) -> Shipper:
    """``dnstrace.ship.shipper.make_sink`` with ``dnstrace.collector.embedded.start`` for the embedded case."""
    from dnstrace.collector import embedded  # noqa: PLC0415 (DuckDB and gRPC load only when used)
    from dnstrace.ship import shipper

    return shipper.make_sink(config, embedded=embedded.start)
