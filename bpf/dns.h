/* Event layout of the DNS wire tracer (dns.bpf.c), shared with agent/dnswire.py.
 *
 * One event per DNS-carrying packet a client socket sends (egress, to a DNS port)
 * or receives (ingress, from a DNS port). The kernel copies a bounded prefix of
 * the DNS payload (for TCP: starting at the 2-byte length prefix); user space
 * parses names from those bytes. Packed by hand: largest fields first, no holes.
 * The Python side decodes the header with struct format DNS_EVENT_FMT.
 */
#ifndef DNSTRACE_DNS_H
#define DNSTRACE_DNS_H

#include "dnstrace.h"

#define DNS_MAX_CAPTURE 512 /* payload bytes copied per packet */

#define DNS_DIR_EGRESS 0  /* a query leaving a client socket */
#define DNS_DIR_INGRESS 1 /* an answer reaching a client socket */

/* Per-CPU counters (index into the `counters` array map). */
#define DNS_CNT_EVENTS 0      /* events written to the ring buffer */
#define DNS_CNT_RINGBUF_FULL 1 /* events lost: ring buffer full */
#define DNS_CNT_MALFORMED 2   /* bad IP/UDP/TCP lengths or DNS payload shorter than its header */
#define DNS_CNT_NO_OWNER 3    /* ingress on a socket whose owner was never seen on egress */
#define DNS_CNT_MAX 4

struct dns_event_hdr {
	__u64 ts_ns;        /* bpf_ktime_get_ns() */
	__u64 cookie;       /* socket cookie */
	__u32 pid;          /* owner tgid (from the cookie map on ingress) */
	__u32 tid;          /* owner thread on egress when known */
	__u32 tcp_seq;      /* TCP sequence number of this segment (0 for UDP) */
	__u8 saddr[16];     /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 payload_len;  /* bytes after the UDP/TCP header */
	__u16 cap_len;      /* bytes copied into data[] */
	__u8 family;        /* 4 or 6 */
	__u8 proto;         /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 dir;           /* DNS_DIR_* */
	__u8 pad;
	char comm[TASK_COMM_LEN];
};

struct dns_event {
	struct dns_event_hdr hdr;
	__u8 data[DNS_MAX_CAPTURE];
};

struct dns_owner {
	__u32 pid;
	__u32 tid;
	char comm[TASK_COMM_LEN];
};

#endif
