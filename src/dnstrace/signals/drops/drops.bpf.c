/* Packets dropped with a reason (skb:kfree_skb), with where they came from and went.
 *
 * kfree_skb carries only skbaddr, location, ethertype and the reason; the addresses
 * and devices come from correlating, per CPU, the recent net:netif_receive_skb calls
 * (ingress device by skbaddr) and fib:fib_table_lookup calls (the forward lookup
 * holds src/dst/iif, the reverse lookup of rp_filter shows where the return route
 * points). Reason numbers differ between kernels: the agent fills `wanted` from the
 * running kernel's tracefs. Every wanted drop is counted per (reason, sending
 * process, ingress device); at most DROP_EVENT_BUDGET events per key and second are sent.
 *
 * Compile-time knobs (drops/source.py): DROP_EVENT_BUDGET, KEY_MAX, RINGBUF_PAGES.
 */
#include "drops.h"

/* A received packet is dropped within its softirq: older matches are recycled addresses. */
#define RX_MATCH_WINDOW_NS 5000000ULL

/* The tracepoint's field type is an enum this program has no definition of;
 * its values come from tracefs, the layout is a 4-byte unsigned enum. */
enum skb_drop_reason { DT_SKB_DROP_REASON_ANY = 0, DT_SKB_DROP_REASON_LAST = 0x7fffffff };

struct cpu_ctx {
	__u64 rx_skb[DROPS_NRX];
	__u64 rx_ts[DROPS_NRX];
	char rx_name[DROPS_NRX][16];
	struct drops_fib fib[DROPS_NFIB];
	__u32 rx_next;
	__u32 fib_next;
};

BPF_PERCPU_ARRAY(ctx_of_cpu, struct cpu_ctx, 1);
BPF_PERCPU_ARRAY(scratch, struct drops_event, 1);
BPF_ARRAY(wanted, u8, 1024);
BPF_HASH(counts, struct drops_key, struct drops_value, KEY_MAX);
BPF_PERCPU_ARRAY(stats, u64, DROPS_NSTATS);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline void stat_add(int index)
{
	u64 *value = stats.lookup(&index);
	if (value)
		*value += 1;
}

TRACEPOINT_PROBE(net, netif_receive_skb)
{
	int zero = 0;
	struct cpu_ctx *c = ctx_of_cpu.lookup(&zero);
	if (!c)
		return 0;
	u32 slot = c->rx_next % DROPS_NRX;
	c->rx_next++;
	c->rx_skb[slot] = (u64)args->skbaddr;
	c->rx_ts[slot] = bpf_ktime_get_ns();
	TP_DATA_LOC_READ_STR(c->rx_name[slot], name, 16);
	return 0;
}

TRACEPOINT_PROBE(fib, fib_table_lookup)
{
	int zero = 0;
	struct cpu_ctx *c = ctx_of_cpu.lookup(&zero);
	if (!c)
		return 0;
	u32 slot = c->fib_next % DROPS_NFIB;
	c->fib_next++;
	struct drops_fib *f = &c->fib[slot];
	f->ts_ns = bpf_ktime_get_ns();
	f->tb_id = args->tb_id;
	f->err = args->err;
	f->oif = args->oif;
	f->iif = args->iif;
	__builtin_memcpy(f->src, args->src, 4);
	__builtin_memcpy(f->dst, args->dst, 4);
	f->sport = args->sport;
	f->dport = args->dport;
	f->proto = args->proto;
	__builtin_memcpy(f->name, args->name, 16);
	return 0;
}

/* skb memory is recycled at once: forget a received skb when it is freed, so a
 * later packet at the same address is not taken for it. */
static __always_inline void forget_rx(struct cpu_ctx *c, u64 skbaddr)
{
#pragma unroll
	for (int i = 0; i < DROPS_NRX; i++) {
		if (c->rx_skb[i] == skbaddr)
			c->rx_skb[i] = 0;
	}
}

TRACEPOINT_PROBE(skb, consume_skb)
{
	int zero = 0;
	struct cpu_ctx *c = ctx_of_cpu.lookup(&zero);
	if (c)
		forget_rx(c, (u64)args->skbaddr);
	return 0;
}

TRACEPOINT_PROBE(skb, kfree_skb)
{
	int zero = 0;
	struct cpu_ctx *c = ctx_of_cpu.lookup(&zero);
	if (!c)
		return 0;
	u64 skbaddr = (u64)args->skbaddr;
	u32 reason = args->reason;
	u32 index = reason & 1023;
	u8 *want = wanted.lookup(&index);
	if (!want || !*want || reason > 1023) {
		forget_rx(c, skbaddr);
		return 0;
	}
	stat_add(DROPS_STAT_SEEN);

	struct drops_event *ev = scratch.lookup(&zero);
	if (!ev)
		return 0;
	u64 now = bpf_ktime_get_ns();

	__builtin_memset(ev->ifname, 0, sizeof(ev->ifname));
	ev->rx_match = 0;
	ev->rx_ts_ns = 0;
#pragma unroll
	for (int i = 0; i < DROPS_NRX; i++) {
		if (c->rx_skb[i] == skbaddr && c->rx_ts[i] > ev->rx_ts_ns && now - c->rx_ts[i] < RX_MATCH_WINDOW_NS) {
			ev->rx_match = 1;
			ev->rx_ts_ns = c->rx_ts[i];
			__builtin_memcpy(ev->ifname, c->rx_name[i], 16);
		}
	}
	forget_rx(c, skbaddr);

	struct drops_key key = {};
	key.reason = reason;
	if (!ev->rx_match)
		key.pid = bpf_get_current_pid_tgid() >> 32;
	__builtin_memcpy(key.ifname, ev->ifname, 16);
	struct drops_value *value = counts.lookup(&key);
	if (!value) {
		struct drops_value fresh = {};
		counts.update(&key, &fresh);
		value = counts.lookup(&key);
	}
	int emit = 1;
	if (value) {
		__sync_fetch_and_add(&value->total, 1);
		if (now - value->window_start_ns > 1000000000ULL) {
			value->window_start_ns = now;
			value->window_events = 0;
		}
		emit = __sync_fetch_and_add(&value->window_events, 1) < DROP_EVENT_BUDGET;
	} else {
		stat_add(DROPS_STAT_KEY_FULL);
	}
	if (!emit) {
		stat_add(DROPS_STAT_SAMPLED);
		if (value)
			__sync_fetch_and_add(&value->sampled, 1);
		return 0;
	}

	ev->ts_ns = now;
	ev->skbaddr = skbaddr;
	ev->location = (u64)args->location;
	ev->pid_tgid = bpf_get_current_pid_tgid();
	ev->reason = reason;
	ev->protocol = args->protocol;
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
	u32 first = c->fib_next;
	ev->nfib = first > DROPS_NFIB ? DROPS_NFIB : first;
#pragma unroll
	for (int i = 0; i < DROPS_NFIB; i++)
		__builtin_memcpy(&ev->fib[i], &c->fib[(first + i) % DROPS_NFIB], sizeof(struct drops_fib));

	if (events.ringbuf_output(ev, sizeof(*ev), 0) != 0) {
		stat_add(DROPS_STAT_RINGBUF_FULL);
		if (value)
			__sync_fetch_and_add(&value->sampled, 1);
		return 0;
	}
	stat_add(DROPS_STAT_EVENTS);
	return 0;
}
