"""The kernel<->Python contract of the DNS wire tracer: the record layouts and counter names of ``dns.h``.

Every layout here mirrors a struct of ``dns.h`` (little endian, packed by hand there so no
padding hides); every name list mirrors a run of ``#define``s. Change both sides together.
"""

from __future__ import annotations

import struct
from pathlib import Path

from dnstrace.kernel.abi import EnumAbi, HeaderAbi, StructAbi

# struct dns_event_hdr in dns.h (96 bytes, little endian, no padding).
EVENT_HDR = struct.Struct("<QQIIII16s16sHHHHBBBB16sI")
EVENT_HDR_SIZE = EVENT_HDR.size
# indexes in EVENT_HDR tuples
HDR_PID, HDR_QSEQ, HDR_PAYLOAD_LEN, HDR_CAP_LEN, HDR_PROTO, HDR_DIRECTION, HDR_KIND = 2, 5, 10, 11, 13, 14, 15
# struct dns_pair after its header: query time, query length, then the query's bytes, then the answer's.
PAIR_EXT = struct.Struct("<QH6x")
DNS_QUERY_CAPTURE = 192  # longest query the kernel pairs
PAIR_QUERY_START = EVENT_HDR_SIZE + PAIR_EXT.size
DIR_EGRESS, DIR_INGRESS = 0, 1
KIND_PACKET, KIND_PAIR, KIND_OWNER = 0, 1, 2
PROTO_TCP, PROTO_UDP = 6, 17
# Kernel counter indexes (DNS_CNT_* in dns.h).
KERNEL_COUNTERS = ("kernel_events", "ringbuf_lost", "kernel_malformed", "no_owner", "kernel_inflight_added",
                   "kernel_paired", "kernel_resent", "pairs_lost", "kernel_unpaired_full")
# struct dns_query (dns.h) up to its comm; the query bytes follow at QUERY_ENTRY_DATA
QUERY_ENTRY = struct.Struct("<QIIIHH16s16sHBx16s")
QUERY_ENTRY_HEAD = struct.Struct("<QIII")  # ts_ns, pid, tid, qseq
QUERY_ENTRY_DATA = QUERY_ENTRY.size
QUERY_KEY = struct.Struct("<QH")  # struct dns_query_key: cookie, id

# What the ABI test holds against dns.h.
HEADER_ABI = HeaderAbi(
    Path(__file__).with_name("dns.h"),
    structs=(StructAbi("dns_event_hdr", EVENT_HDR),
             StructAbi("dns_pair", PAIR_EXT, at="query_ts_ns", whole=False),
             StructAbi("dns_query", QUERY_ENTRY, whole=False),
             StructAbi("dns_query", QUERY_ENTRY_HEAD, whole=False),
             StructAbi("dns_query_key", QUERY_KEY, whole=False)),
    enums=(EnumAbi("DNS_CNT_", KERNEL_COUNTERS, {
        "DNS_CNT_EVENTS": "kernel_events", "DNS_CNT_RINGBUF_FULL": "ringbuf_lost",
        "DNS_CNT_MALFORMED": "kernel_malformed", "DNS_CNT_NO_OWNER": "no_owner",
        "DNS_CNT_INFLIGHT_ADDED": "kernel_inflight_added", "DNS_CNT_PAIRED": "kernel_paired",
        "DNS_CNT_RESENT": "kernel_resent", "DNS_CNT_LOST_PAIRS": "pairs_lost",
        "DNS_CNT_UNPAIRED_FULL": "kernel_unpaired_full"}, count_define="DNS_CNT_MAX"),),
    constants={"DNS_QUERY_CAPTURE": DNS_QUERY_CAPTURE, "DNS_DIR_EGRESS": DIR_EGRESS,
               "DNS_DIR_INGRESS": DIR_INGRESS, "DNS_KIND_PACKET": KIND_PACKET,
               "DNS_KIND_PAIR": KIND_PAIR, "DNS_KIND_OWNER": KIND_OWNER},
    offsets={"dns_event.data": EVENT_HDR_SIZE, "dns_pair.data": PAIR_QUERY_START,
             "dns_query.data": QUERY_ENTRY_DATA},
)
