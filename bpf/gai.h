/* gai: one event per completed getaddrinfo / gethostbyname / gethostbyname2 call.
 *
 * Shared by gai.bpf.c and the Python decoder in agent/gai.py (struct format
 * GAI_EVENT_FORMAT there). Packed by hand: fixed-width fields, largest first, no holes.
 */
#ifndef DNSTRACE_GAI_H
#define DNSTRACE_GAI_H

#include "dnstrace.h"

#define GAI_NAME_LEN 256

/* Which libc function was called (probe cookie carries the libc id, not this). */
#define GAI_FUNC_GETADDRINFO 0
#define GAI_FUNC_GETHOSTBYNAME 1
#define GAI_FUNC_GETHOSTBYNAME2 2

struct gai_event {
	__u64 start_ns;         /* bpf_ktime_get_ns() at entry (CLOCK_MONOTONIC) */
	__u64 latency_ns;       /* entry to return */
	__u64 pid_tgid;         /* tgid << 32 | tid */
	__u64 libc_id;          /* attach cookie: which libc (agent/libcs.py numbering) */
	__s32 ret;              /* getaddrinfo: its return (0 or EAI_*); gethostbyname*: 0, or -1 for NULL */
	__u32 func;             /* GAI_FUNC_* */
	char comm[TASK_COMM_LEN];
	char name[GAI_NAME_LEN];  /* requested host, NUL-terminated (empty when node was NULL) */
};

#endif
