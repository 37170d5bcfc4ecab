"""What the Python side of the gai signal decodes from ``gai.h``: checked against the header by the ABI test."""

from __future__ import annotations

from pathlib import Path

from dnstrace.kernel.abi import EnumAbi, HeaderAbi, StructAbi
from dnstrace.signals.gai import source as gai

HEADER_ABI = HeaderAbi(
    Path(__file__).with_name("gai.h"),
    structs=(StructAbi("gai_event_head", gai.GAI_EVENT_HEAD), StructAbi("gai_event_short", gai.GAI_EVENT_SHORT),
             StructAbi("gai_event", gai.GAI_EVENT)),
    enums=(
        EnumAbi("GAI_FUNC_", gai.FUNCS, {"GAI_FUNC_GETADDRINFO": "getaddrinfo",
                                         "GAI_FUNC_GETHOSTBYNAME": "gethostbyname",
                                         "GAI_FUNC_GETHOSTBYNAME2": "gethostbyname2"}),
        EnumAbi("GAI_COUNTER_", gai.COUNTER_NAMES, {"GAI_COUNTER_INFLIGHT_FULL": "inflight_full",
                                                    "GAI_COUNTER_RINGBUF_FULL": "ringbuf_full",
                                                    "GAI_COUNTER_NAME_FAULT": "name_unreadable",
                                                    "GAI_COUNTER_STALE_INFLIGHT": "stale_inflight"},
                count_define="GAI_COUNTER_SLOTS"),
    ),
    constants={"GAI_NAME_LEN": gai.GAI_NAME_LEN, "GAI_SHORT_NAME_LEN": gai.GAI_SHORT_NAME_LEN,
               "GAI_FUNC_GETADDRINFO": gai.FUNC_GETADDRINFO},
)
