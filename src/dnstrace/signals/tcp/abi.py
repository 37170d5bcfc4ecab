"""What the Python side of the tcp signal decodes from ``tcp.h``: checked against the header by the ABI test."""

from __future__ import annotations

from pathlib import Path

from dnstrace.kernel.abi import EnumAbi, HeaderAbi, StructAbi
from dnstrace.signals.tcp import source as tcp

HEADER_ABI = HeaderAbi(
    Path(__file__).with_name("tcp.h"),
    structs=(StructAbi("tcp_event", tcp.EVENT), StructAbi("tcp_flow_key", tcp.FLOW_KEY),
             StructAbi("tcp_flow_value", tcp.FLOW_VALUE)),
    enums=(
        EnumAbi("TCP_RES_", tcp.RESULTS, {f"TCP_RES_{r.upper()}": r for r in tcp.RESULTS},
                count_define="TCP_NRESULTS"),
        EnumAbi("TCP_STAT_", tcp.STAT_NAMES, {
            "TCP_STAT_CONNECTS": "connects", "TCP_STAT_RETRIES": "syn_retries",
            "TCP_STAT_OUTCOMES": "result_established",  # the first of TCP_NRESULTS, in TCP_RES_ order
            "TCP_STAT_CONN_FULL": "conn_table_full", "TCP_STAT_FLOW_FULL": "flow_table_full",
            "TCP_STAT_RINGBUF_FULL": "ringbuf_full", "TCP_STAT_UNKNOWN_RETRIES": "unknown_owner_retries",
            "TCP_STAT_SAMPLED_OUT": "sampled_out"}, count_define="TCP_NSTATS"),
    ),
    constants={"TCP_EV_SYN_RETRY": tcp.EV_SYN_RETRY, "TCP_EV_CONNECT": tcp.EV_CONNECT},
)
