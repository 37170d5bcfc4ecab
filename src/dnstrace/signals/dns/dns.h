/* Event layout of the DNS wire tracer (dns.bpf.c), mirrored by abi.py (tests/unit/kernel/test_abi.py checks it).
 *
 * Three record kinds share one ring buffer (dns_event_hdr.kind):
 *  - DNS_KIND_PACKET: one DNS-carrying packet a client socket sent (egress, to a
 *    DNS port) or received (ingress, from a DNS port), with a bounded prefix of its
 *    payload (for TCP: starting at the 2-byte length prefix). TCP, queries that
 *    cannot be paired, answers that found no paired query, queries taken out of the
 *    in-flight map because their id was sent again.
 *  - DNS_KIND_PAIR: a UDP query and its answer, paired in the kernel: the query
 *    waited in the `inflight` map (struct dns_query) keyed by socket cookie + DNS id;
 *    its answer emits one record with both (struct dns_pair).
 *  - DNS_KIND_OWNER: the first packet of a new DNS socket (header only), so user
 *    space learns the process (and reads its resolv.conf) while it is alive.
 * Every query (packet or entry) carries `qseq`, the per-process send sequence
 * number: user space sees pairs in answer order and uses it to restore send order.
 * Packed by hand: largest fields first, no holes.
 */
#ifndef DNSTRACE_DNS_H
#define DNSTRACE_DNS_H

#include "dnstrace.h"

#define DNS_MAX_CAPTURE 512   /* payload bytes copied per packet */
#define DNS_QUERY_CAPTURE 192 /* a UDP query longer than this is not paired in the kernel */

#define DNS_DIR_EGRESS 0  /* a query leaving a client socket */
#define DNS_DIR_INGRESS 1 /* an answer reaching a client socket */

#define DNS_KIND_PACKET 0
#define DNS_KIND_PAIR 1
#define DNS_KIND_OWNER 2

/* Per-CPU counters (index into the `counters` array map). */
#define DNS_CNT_EVENTS 0       /* records written to the ring buffer */
#define DNS_CNT_RINGBUF_FULL 1 /* packet and owner records lost: ring buffer full (pairs: below) */
#define DNS_CNT_MALFORMED 2    /* bad IP/UDP/TCP lengths or DNS payload shorter than its header */
#define DNS_CNT_NO_OWNER 3     /* ingress on a socket whose owner was never seen on egress */
#define DNS_CNT_INFLIGHT_ADDED 4 /* queries stored in the in-flight map */
#define DNS_CNT_PAIRED 5       /* queries taken out of the map by their answer */
#define DNS_CNT_RESENT 6       /* queries taken out of the map because their id was sent again */
#define DNS_CNT_LOST_PAIRS 7   /* pair records lost: ring buffer full (a query and its answer each) */
#define DNS_CNT_UNPAIRED_FULL 8 /* queries sent as packets because the in-flight map was full */
#define DNS_CNT_MAX 9

struct dns_event_hdr {
	__u64 ts_ns;        /* bpf_ktime_get_ns() (answer time for a pair) */
	__u64 cookie;       /* socket cookie */
	__u32 pid;          /* owner tgid (from the cookie map on ingress) */
	__u32 tid;          /* owner thread on egress when known */
	__u32 tcp_seq;      /* TCP sequence number of this segment (0 for UDP) */
	__u32 qseq;         /* per-process query send sequence number (queries and pairs) */
	__u8 saddr[16];     /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 payload_len;  /* bytes after the UDP/TCP header */
	__u16 cap_len;      /* bytes copied into data[] */
	__u8 family;        /* 4 or 6 */
	__u8 proto;         /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 dir;           /* DNS_DIR_* (a pair: DNS_DIR_INGRESS, addresses of the answer) */
	__u8 kind;          /* DNS_KIND_* */
	char comm[TASK_COMM_LEN];
	__u32 reserved;
};

struct dns_event {
	struct dns_event_hdr hdr;
	__u8 data[DNS_MAX_CAPTURE];
};

/* A UDP query waiting for its answer in the `inflight` map. */
struct dns_query_key {
	__u64 cookie;
	__u16 id;
	__u16 pad[3];
};

struct dns_query {
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 qseq;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 len;          /* query payload length (== bytes in data[]) */
	__u8 family;
	__u8 pad;
	char comm[TASK_COMM_LEN];
	__u8 data[DNS_QUERY_CAPTURE];
};

/* DNS_KIND_PAIR: the answer's header (hdr: cookie, owner, qseq of the query,
 * answer addresses/ports/lengths), the query's time and length, then the query's
 * bytes (query_len of them) immediately followed by the answer's (hdr.cap_len):
 * no fixed room, so a small exchange makes a small record. */
struct dns_pair {
	struct dns_event_hdr hdr;
	__u64 query_ts_ns;
	__u16 query_len;
	__u16 pad[3];
	__u8 data[DNS_QUERY_CAPTURE + DNS_MAX_CAPTURE];
};

struct dns_owner {
	__u32 pid;
	__u32 tid;
	char comm[TASK_COMM_LEN];
};

#endif
