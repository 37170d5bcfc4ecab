"""What the Python side of the drops signal decodes from ``drops.h``: checked against the header by the ABI test."""

from __future__ import annotations

from pathlib import Path

from dnstrace.kernel.abi import EnumAbi, HeaderAbi, StructAbi
from dnstrace.signals.drops import source as drops

HEADER_ABI = HeaderAbi(
    Path(__file__).with_name("drops.h"),
    structs=(StructAbi("drops_fib", drops.FIB), StructAbi("drops_event", drops.EVENT_HEAD, whole=False),
             StructAbi("drops_event", drops.FIB, at="fib[0]", whole=False),
             StructAbi("drops_key", drops.KEY), StructAbi("drops_value", drops.VALUE)),
    enums=(EnumAbi("DROPS_STAT_", drops.STAT_NAMES, {
        "DROPS_STAT_SEEN": "drops_seen", "DROPS_STAT_EVENTS": "events", "DROPS_STAT_SAMPLED": "sampled_out",
        "DROPS_STAT_RINGBUF_FULL": "ringbuf_full", "DROPS_STAT_KEY_FULL": "key_table_full"},
        count_define="DROPS_NSTATS"),),
    constants={"DROPS_NFIB": drops.NFIB},
    sizes={"drops_event": drops.EVENT_SIZE},
    offsets={"drops_event.fib": drops.EVENT_HEAD.size},
)
