"""A minimal agent for the gai benches: GaiSource under the Runner, events counted, not printed.

This is what the agent pays per event before aggregation (kernel ring buffer ->
event dicts). Prints "events=N" (cumulative) to stdout once a second.
"""

from __future__ import annotations

import sys

from dnstrace.log import status
from dnstrace.pipeline.loop import Runner
from dnstrace.signals.gai.source import GaiSource


def main() -> int:
    seen = [0]
    runner = Runner([GaiSource()])

    def on_events(events):
        seen[0] += len(events)

    def on_tick(_now):
        print(f"events={seen[0]}", flush=True)

    runner.run(on_events, on_tick=on_tick, on_ready=lambda: status("bench agent: attached"))
    print(f"events={seen[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
