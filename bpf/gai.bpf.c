/* gai: latency of getaddrinfo / gethostbyname / gethostbyname2 per call, per thread.
 *
 * gai_enter runs at function entry (uprobe), gai_return at its return (uretprobe),
 * both attached to every libc on the node by agent/gai.py with a BPF link whose
 * cookie is (libc_id << 8 | GAI_FUNC_*). A call is keyed by (pid_tgid, stack pointer
 * at entry): the return's stack pointer minus GAI_RET_SP_ADJUST is the same value,
 * so nested or tail-called functions pair up exactly and a stale entry from a
 * thread that died mid-call can never be matched by another call.
 *
 * Calls in flight when probes are attached have no entry: their return is ignored
 * (the loader attaches return probes before entry probes). Events are written
 * only at return, complete, so nothing half-made ever reaches user space.
 *
 * Optional, set by the loader with #defines:
 *   GAI_FILTER_PIDS      only tgids present in pid_filter are recorded
 *   GAI_MIN_LATENCY_NS   faster calls are dropped in the kernel
 *   GAI_RET_SP_ADJUST    bytes the return instruction pops (8 on x86-64, 0 on arm64)
 */
#include <uapi/linux/ptrace.h>
#include "gai.h"

#ifndef GAI_RET_SP_ADJUST
#define GAI_RET_SP_ADJUST 8
#endif
#ifndef GAI_MAX_INFLIGHT
#define GAI_MAX_INFLIGHT 10240
#endif
#ifndef GAI_RINGBUF_PAGES
#define GAI_RINGBUF_PAGES 512
#endif

#define COUNTER_INFLIGHT_FULL 0
#define COUNTER_RINGBUF_FULL 1
#define COUNTER_NAME_FAULT 2
#define COUNTER_SLOTS 3

/* The helper exists since 5.15; bcc's helpers.h of this version does not declare it. */
static __u64 (*dt_get_attach_cookie)(void *ctx) = (void *)BPF_FUNC_get_attach_cookie;

struct inflight_key {
	__u64 pid_tgid;
	__u64 sp;
};

/* Only the name *pointer* is kept: the caller's string stays valid until the call
 * returns, so it is read once, at return, straight into the ring-buffer record.
 * That keeps the entry probe to a 24-byte map insert (the cheapest entry we found). */
struct inflight_value {
	__u64 start_ns;
	__u64 cookie;
	__u64 name_ptr;
};

BPF_HASH(inflight, struct inflight_key, struct inflight_value, GAI_MAX_INFLIGHT);
BPF_PERCPU_ARRAY(counters, __u64, COUNTER_SLOTS);
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
	struct inflight_value value = {
		.start_ns = bpf_ktime_get_ns(),
		.cookie = dt_get_attach_cookie(ctx),
		.name_ptr = PT_REGS_PARM1(ctx),
	};
	struct inflight_key key = {.pid_tgid = pid_tgid, .sp = PT_REGS_SP(ctx)};
	/* NOEXIST: a function tail-calling another (musl gethostbyname -> gethostbyname2)
	 * enters twice with the same stack pointer; the outer call keeps its entry. */
	int err = inflight.insert(&key, &value);
	if (err == -E2BIG || err == -ENOMEM)
		count(COUNTER_INFLIGHT_FULL);
	return 0;
}

int gai_return(struct pt_regs *ctx)
{
	struct inflight_key key = {
		.pid_tgid = bpf_get_current_pid_tgid(),
		.sp = PT_REGS_SP(ctx) - GAI_RET_SP_ADJUST,
	};
	struct inflight_value *value = inflight.lookup(&key);
	if (!value)
		return 0; /* entered before the probes were attached (or filtered out) */
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = now - value->start_ns;
#ifdef GAI_MIN_LATENCY_NS
	if (latency < GAI_MIN_LATENCY_NS) {
		inflight.delete(&key);
		return 0;
	}
#endif
	struct gai_event *event = events.ringbuf_reserve(sizeof(struct gai_event));
	if (!event) {
		count(COUNTER_RINGBUF_FULL);
		inflight.delete(&key);
		return 0;
	}
	__u32 func = value->cookie & 0xff;
	long rc = PT_REGS_RC(ctx);
	event->start_ns = value->start_ns;
	event->latency_ns = latency;
	event->pid_tgid = key.pid_tgid;
	event->libc_id = value->cookie >> 8;
	event->func = func;
	/* gethostbyname* return a pointer; NULL means failure (h_errno is thread-local
	 * storage, out of reach of any stable ABI, so the reason is not known). */
	event->ret = func == GAI_FUNC_GETADDRINFO ? (__s32)rc : (rc ? 0 : -1);
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	if (bpf_probe_read_user_str(event->name, sizeof(event->name), (void *)value->name_ptr) < 0) {
		event->name[0] = 0;
		if (value->name_ptr)
			count(COUNTER_NAME_FAULT);
	}
	inflight.delete(&key);
	int zero = 0;
	events.ringbuf_submit(event, dt_wakeup_flags(last_wakeup.lookup(&zero), now));
	return 0;
}
