/* Events of drops.bpf.c: packets the kernel freed with an interesting drop reason.
 *
 * Packed by hand, largest fields first; drops/source.py decodes the same layouts
 * with struct (FIB, EVENT_HEAD, KEY, VALUE; counters STAT_NAMES).
 * tests/unit/kernel/test_abi.py compares them.
 */
#ifndef DNSTRACE_DROPS_H
#define DNSTRACE_DROPS_H

#include "dnstrace.h"

#define DROPS_NFIB 4 /* recent fib_table_lookup calls kept per CPU */
#define DROPS_NRX 4  /* recent netif_receive_skb calls kept per CPU */

/* Global counters (per-CPU array indices). */
#define DROPS_STAT_SEEN 0        /* drops with a wanted reason */
#define DROPS_STAT_EVENTS 1      /* sent as events */
#define DROPS_STAT_SAMPLED 2     /* over the budget: only counted */
#define DROPS_STAT_RINGBUF_FULL 3
#define DROPS_STAT_KEY_FULL 4    /* not counted per (reason, pid, device): map full */
#define DROPS_NSTATS 5

/* One fib:fib_table_lookup call (IPv4). */
struct drops_fib {
	__u64 ts_ns;
	__u32 tb_id;
	__s32 err;
	__s32 oif;
	__s32 iif;
	__u8 src[4];
	__u8 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
	char name[16]; /* device the result points to */
}; /* 56 bytes */

struct drops_event {
	__u64 ts_ns;
	__u64 skbaddr;
	__u64 location;
	__u64 pid_tgid;  /* of whoever was running: meaningful only in process context */
	__u64 rx_ts_ns;  /* when this skb passed netif_receive_skb on this CPU, 0 = not seen */
	__u32 reason;
	__u16 protocol;  /* ethertype, host order */
	__u8 rx_match;   /* 1 = the skb was received on this CPU just before (softirq path) */
	__u8 nfib;
	char ifname[16]; /* ingress device name, when rx_match */
	char comm[TASK_COMM_LEN];
	struct drops_fib fib[DROPS_NFIB]; /* oldest first */
}; /* 304 bytes */

struct drops_key {
	__u32 reason;
	__u32 pid;       /* sender's tgid for drops in process context, else 0 */
	char ifname[16];
}; /* 24 bytes */

struct drops_value {
	__u64 total;
	__u64 sampled;
	__u64 window_start_ns;
	__u64 window_events;
}; /* 32 bytes */

#endif
