/* gai: latency of getaddrinfo / gethostbyname / gethostbyname2 per call, per thread.
 *
 * gai_enter runs at function entry (uprobe), gai_return at its return (uretprobe),
 * both attached to every libc on the node by gai/source.py with a BPF link whose
 * cookie is (libc_id << 8 | GAI_FUNC_*). A call is held in its thread's slot of the
 * inflight array with its owner (pid_tgid, stack pointer at entry): the return's
 * stack pointer minus GAI_RET_SP_ADJUST is the same value, so a tail-called function
 * pairs with its caller's entry, and a stale slot from a thread that died mid-call
 * is never matched by another call (it is reused after GAI_STALE_NS).
 *
 * Calls in flight when probes are attached have no entry: their return is ignored
 * (the loader attaches return probes before entry probes). Events are written
 * only at return, complete, so nothing half-made ever reaches user space.
 *
 * Where the return probe's time goes (bpf_stats run_time / run_cnt, /etc/hosts path,
 * a bare uretprobe program being ~35 ns): 160-166 ns in all; ~57 ns of it is the ring
 * buffer (reserve + submit: spinlock, commit; building the record in a per-CPU array
 * instead measured 103 ns), ~33 ns reading the name (127 ns without), the rest the
 * clock, comm, slot and cookie. On the DNS path the call in between leaves the caches
 * cold, and writing a full 312-byte record (five cache lines) cost 282-292 ns; names
 * are therefore read straight into a two-line record (gai_event_short, 120 bytes +
 * the 8-byte ring header) and only a name that fills it (62+ characters) is read
 * again into a full-size record, the short one discarded: 200-215 ns on that path.
 * The ring buffer, the name and the comm stay: they are the event. (A per-CPU scratch
 * record sent with bpf_ringbuf_output would avoid the second read, but uprobe programs
 * are preemptible on this kernel: another task's return probe could overwrite it.)
 *
 * Optional, set by the loader with #defines:
 *   GAI_FILTER_PIDS      only tgids present in pid_filter are recorded
 *   GAI_MIN_LATENCY_NS   faster calls are dropped in the kernel
 *   GAI_RET_SP_ADJUST    bytes the return instruction pops (8 on x86-64, 0 on arm64)
 *   GAI_INFLIGHT_SLOTS   in-flight slots, a power of two (threads whose tids collide
 *                        modulo it cannot be timed at the same moment: inflight_full)
 */
#include <uapi/linux/ptrace.h>
#include "gai.h"

#ifndef GAI_RET_SP_ADJUST
#define GAI_RET_SP_ADJUST 8
#endif
#ifndef GAI_INFLIGHT_SLOTS
#define GAI_INFLIGHT_SLOTS 16384 /* power of two: slot = tid & (GAI_INFLIGHT_SLOTS - 1) */
#endif
#ifndef GAI_STALE_NS
#define GAI_STALE_NS (600ULL * 1000000000ULL) /* no lookup lasts 10 min: its return was lost */
#endif
#ifndef GAI_RINGBUF_PAGES
#define GAI_RINGBUF_PAGES 1024 /* 4 MiB: ~32k short records, a third of a second at 100k calls/s */
#endif

/* The helper exists since 5.15; bcc's helpers.h of this version does not declare it. */
static __u64 (*dt_get_attach_cookie)(void *ctx) = (void *)BPF_FUNC_get_attach_cookie;

/* Only the name *pointer* is kept: the caller's string stays valid until the call
 * returns, so it is read once, at return, straight into the ring-buffer record. */
struct inflight_call {
	__u64 pid_tgid;         /* owner of the slot; 0 when free */
	__u64 sp;               /* stack pointer at entry */
	__u64 start_ns;
	__u64 cookie;
	__u64 name_ptr;
};

/* Calls in flight live in an array indexed by thread id, not in a hash map: an
 * array lookup is inlined by the verifier (no helper call, no lock, no element
 * allocation), which was most of both probes' cost. A slot holds one call per
 * thread; the owner (pid_tgid, sp) is checked at return, so another thread whose
 * tid shares the slot never pairs with it. */
BPF_ARRAY(inflight, struct inflight_call, GAI_INFLIGHT_SLOTS);
BPF_PERCPU_ARRAY(counters, __u64, GAI_COUNTER_SLOTS);
BPF_ARRAY(last_wakeup, __u64, 1);
BPF_RINGBUF_OUTPUT(events, GAI_RINGBUF_PAGES);
#ifdef GAI_FILTER_PIDS
BPF_HASH(pid_filter, __u32, __u8, 1024);
#endif

static __always_inline void count(int slot)
{
	__u64 *value = counters.lookup(&slot);
	if (value)
		(*value)++;
}

int gai_enter(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
#ifdef GAI_FILTER_PIDS
	__u32 tgid = pid_tgid >> 32;
	if (!pid_filter.lookup(&tgid))
		return 0;
#endif
	__u32 slot = (__u32)pid_tgid & (GAI_INFLIGHT_SLOTS - 1);
	struct inflight_call *call = inflight.lookup(&slot);
	if (!call)
		return 0;
	__u64 sp = PT_REGS_SP(ctx);
	__u64 now = bpf_ktime_get_ns();
	__u64 owner = call->pid_tgid;
	if (owner) {
		/* A function tail-calling another (musl gethostbyname -> gethostbyname2)
		 * enters twice with the same stack pointer: the outer call keeps the slot. */
		if (owner == pid_tgid && call->sp == sp)
			return 0;
		if (now - call->start_ns < GAI_STALE_NS) {
			if (owner != pid_tgid) {
				count(GAI_COUNTER_INFLIGHT_FULL); /* another thread's call holds the slot */
				return 0;
			}
			/* Same thread, other stack pointer: a call nested in a traced call;
			 * the innermost one is timed. */
		} else {
			count(GAI_COUNTER_STALE_INFLIGHT); /* its thread died mid-call (cancel, kill) */
		}
	}
	/* Claim atomically: two threads whose tids share the slot may enter at once on two
	 * CPUs; exactly one wins, the other is counted, and no slot is ever half-written by both. */
	if (owner != pid_tgid && __sync_val_compare_and_swap(&call->pid_tgid, owner, pid_tgid) != owner) {
		count(GAI_COUNTER_INFLIGHT_FULL);
		return 0;
	}
	call->sp = sp;
	call->start_ns = now;
	call->cookie = dt_get_attach_cookie(ctx);
	call->name_ptr = PT_REGS_PARM1(ctx);
	return 0;
}

static __always_inline void fill_head(struct gai_event_head *head, __u64 start_ns, __u64 latency,
				      __u64 pid_tgid, __u64 cookie, long rc)
{
	__u32 func = cookie & 0xff;
	head->start_ns = start_ns;
	head->latency_ns = latency;
	head->pid_tgid = pid_tgid;
	head->libc_id = cookie >> 8;
	head->func = func;
	/* gethostbyname* return a pointer; NULL means failure (h_errno is thread-local
	 * storage, out of reach of any stable ABI, so the reason is not known). */
	head->ret = func == GAI_FUNC_GETADDRINFO ? (__s32)rc : (rc ? 0 : -1);
	bpf_get_current_comm(head->comm, sizeof(head->comm));
}

/* bpf_probe_read_user_str's result -> name_len; an unreadable name is counted. */
static __always_inline __u32 name_length(long copied, __u64 name_ptr)
{
	if (copied > 0)
		return copied - 1;
	if (name_ptr)
		count(GAI_COUNTER_NAME_FAULT);
	return 0;
}

int gai_return(struct pt_regs *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 slot = (__u32)pid_tgid & (GAI_INFLIGHT_SLOTS - 1);
	struct inflight_call *call = inflight.lookup(&slot);
	if (!call || call->pid_tgid != pid_tgid || call->sp != PT_REGS_SP(ctx) - GAI_RET_SP_ADJUST)
		return 0; /* entered before the probes were attached (or filtered out) */
	/* Copy the slot before releasing it: once free, another thread may claim it. */
	__u64 start_ns = call->start_ns, cookie = call->cookie, name_ptr = call->name_ptr;
	call->pid_tgid = 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = now - start_ns;
#ifdef GAI_MIN_LATENCY_NS
	if (latency < GAI_MIN_LATENCY_NS)
		return 0;
#endif
	long rc = PT_REGS_RC(ctx);
	int zero = 0;
	struct gai_event_short *small = events.ringbuf_reserve(sizeof(struct gai_event_short));
	if (!small) {
		count(GAI_COUNTER_RINGBUF_FULL);
		return 0;
	}
	long copied = bpf_probe_read_user_str(small->name, sizeof(small->name), (void *)name_ptr);
	if (copied < (long)sizeof(small->name)) {
		fill_head(&small->head, start_ns, latency, pid_tgid, cookie, rc);
		small->head.name_len = name_length(copied, name_ptr);
		events.ringbuf_submit(small, dt_wakeup_flags(last_wakeup.lookup(&zero), now));
		return 0;
	}
	/* It filled the short record: maybe cut, so it is read again into a full one. */
	events.ringbuf_discard(small, BPF_RB_NO_WAKEUP);
	struct gai_event *event = events.ringbuf_reserve(sizeof(struct gai_event));
	if (!event) {
		count(GAI_COUNTER_RINGBUF_FULL);
		return 0;
	}
	copied = bpf_probe_read_user_str(event->name, sizeof(event->name), (void *)name_ptr);
	fill_head(&event->head, start_ns, latency, pid_tgid, cookie, rc);
	event->head.name_len = name_length(copied, name_ptr);
	events.ringbuf_submit(event, dt_wakeup_flags(last_wakeup.lookup(&zero), now));
	return 0;
}
