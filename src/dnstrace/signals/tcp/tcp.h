/* Events and per-flow counters of tcp.bpf.c (SYN retransmits and connect outcomes).
 *
 * Packed by hand, largest fields first; tcp/source.py decodes the same layouts with
 * struct (EVENT, FLOW_KEY, FLOW_VALUE; counters STAT_NAMES, outcomes RESULTS). Change both
 * together: tests/unit/kernel/test_abi.py compares them.
 */
#ifndef DNSTRACE_TCP_H
#define DNSTRACE_TCP_H

#include "dnstrace.h"

#define TCP_EV_SYN_RETRY 1
#define TCP_EV_CONNECT 2

/* Connect outcomes (index into the result counters). */
#define TCP_RES_ESTABLISHED 0
#define TCP_RES_REFUSED 1
#define TCP_RES_TIMEOUT 2
#define TCP_RES_RESET 3
#define TCP_RES_CLOSED 4
#define TCP_RES_UNREACHABLE 5
#define TCP_NRESULTS 6

/* Global counters (per-CPU array indices). */
#define TCP_STAT_CONNECTS 0
#define TCP_STAT_RETRIES 1
#define TCP_STAT_OUTCOMES 2 /* ..2+TCP_NRESULTS-1 */
#define TCP_STAT_CONN_FULL 8      /* connect not tracked: socket map full */
#define TCP_STAT_FLOW_FULL 9      /* connect not counted per flow: flow map full */
#define TCP_STAT_RINGBUF_FULL 10  /* event not written: ring buffer full (still counted) */
#define TCP_STAT_UNKNOWN_RETRIES 11 /* retransmits of sockets that connected before we attached */
#define TCP_STAT_SAMPLED_OUT 12   /* events over the per-flow budget (still counted) */
#define TCP_NSTATS 13

struct tcp_event {
	__u64 ts_ns;      /* bpf_ktime_get_ns() */
	__u64 elapsed_ns; /* since the connect started (SYN_SENT) */
	__u32 pid;        /* tgid of the connecting process, 0 = unknown */
	__u32 tid;
	__u32 retries;    /* syn_retry: this retransmission's number; connect: total */
	__s32 error;      /* errno the socket reported, 0 = none */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 kind;        /* TCP_EV_* */
	__u8 result;      /* TCP_RES_* (connect) */
	char comm[TASK_COMM_LEN];
}; /* 88 bytes */

struct tcp_flow_key {
	__u8 daddr[16];
	__u32 pid;
	__u16 dport;
	__u16 family;
}; /* 24 bytes */

/* Cumulative and exact: the agent turns them into deltas. */
struct tcp_flow_value {
	__u64 connects;
	__u64 retries;
	__u64 results[TCP_NRESULTS];
	__u64 sampled_retries;                /* retransmits with no syn_retry event of their own */
	__u64 sampled_results[TCP_NRESULTS];  /* outcomes with no connect event of their own */
	__u64 window_start_ns;                /* event budget window */
	__u64 window_events;
	__u64 last_ns;
	char comm[TASK_COMM_LEN];
}; /* 18 * 8 + 16 = 160 bytes */

#endif
