/* Shared definitions for every dnstrace BPF program.
 *
 * Each signal keeps its event struct in its own header (gai.h, dns.h, ...), the
 * way libbpf-tools pairs x.bpf.c with x.h; this file holds what they all use.
 * The Python side decodes the same layouts with the struct module, so every
 * struct here is packed by hand: fixed-width fields, largest first, no holes.
 */
#ifndef DNSTRACE_H
#define DNSTRACE_H

#define TASK_COMM_LEN 16

/* Ring buffer wake-ups. By default every submit may wake the agent (an irq_work
 * per event while the agent keeps up), which costs the traced threads under floods.
 * Programs submit with dt_wakeup_flags() instead: at most one forced wake-up per
 * DT_WAKEUP_INTERVAL_NS (racy across CPUs: at worst an extra one), no wake-up for
 * the events in between; those are read at the next wake-up or the agent's 1 s tick.
 * An isolated event still wakes the agent at once. `last` is the program's own
 * one-slot array (BPF_ARRAY(last_wakeup, __u64, 1)): this header defines no map. */
#ifndef DT_WAKEUP_INTERVAL_NS
#define DT_WAKEUP_INTERVAL_NS 10000000ULL
#endif

static __always_inline __u64 dt_wakeup_flags(__u64 *last, __u64 now)
{
	if (!last)
		return 0;
	if (now - *last < DT_WAKEUP_INTERVAL_NS)
		return BPF_RB_NO_WAKEUP;
	*last = now;
	return BPF_RB_FORCE_WAKEUP;
}

#endif
