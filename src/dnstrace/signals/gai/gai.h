/* gai: one event per completed getaddrinfo / gethostbyname / gethostbyname2 call.
 *
 * Shared by gai.bpf.c and the Python decoder in gai/source.py (struct layouts
 * GAI_EVENT_HEAD, GAI_EVENT_SHORT and GAI_EVENT, counter names COUNTER_NAMES there;
 * tests/unit/kernel/test_abi.py compares them). Packed by hand: fixed-width fields,
 * largest first, no holes.
 */
#ifndef DNSTRACE_GAI_H
#define DNSTRACE_GAI_H

#include "dnstrace.h"

#define GAI_NAME_LEN 256
/* Most names are short: they go in a record of two cache lines (8-byte ring header +
 * 120), longer ones in a full-size record. Fewer ring-buffer lines written per call is
 * fewer cache misses for the traced thread and for the reader (see gai.bpf.c). */
#define GAI_SHORT_NAME_LEN 64

/* Which libc function was called (probe cookie carries the libc id, not this). */
#define GAI_FUNC_GETADDRINFO 0
#define GAI_FUNC_GETHOSTBYNAME 1
#define GAI_FUNC_GETHOSTBYNAME2 2

/* Slots of the per-CPU counters array. */
#define GAI_COUNTER_INFLIGHT_FULL 0  /* not timed: another thread's call held the in-flight slot */
#define GAI_COUNTER_RINGBUF_FULL 1
#define GAI_COUNTER_NAME_FAULT 2     /* the name could not be read */
#define GAI_COUNTER_STALE_INFLIGHT 3 /* slot taken over from a thread that died mid-call */
#define GAI_COUNTER_SLOTS 4

/* Both record sizes start with this head (56 bytes); the ring record's length says which. */
struct gai_event_head {
	__u64 start_ns;         /* bpf_ktime_get_ns() at entry (CLOCK_MONOTONIC) */
	__u64 latency_ns;       /* entry to return */
	__u64 pid_tgid;         /* tgid << 32 | tid */
	__u32 libc_id;          /* attach cookie: which libc (gai/libcs.py numbering) */
	__s32 ret;              /* getaddrinfo: its return (0 or EAI_*); gethostbyname*: 0, or -1 for NULL */
	__u32 func;             /* GAI_FUNC_* */
	__u32 name_len;         /* bytes of name before its NUL (0 when node was NULL or unreadable) */
	char comm[TASK_COMM_LEN];
};

struct gai_event_short {
	struct gai_event_head head;
	char name[GAI_SHORT_NAME_LEN];  /* requested host, NUL-terminated: at most 62 characters */
};

struct gai_event {
	struct gai_event_head head;
	char name[GAI_NAME_LEN];  /* requested host, NUL-terminated */
};

#endif
