/* SYN retransmits and connect outcomes, per process and destination.
 *
 * sock:inet_sock_set_state CLOSE->SYN_SENT runs in the connecting process: the
 * socket (skaddr) is mapped to its owner there. tcp:tcp_retransmit_skb fires from
 * timers (its pid is whoever was running), so it is attributed through that map.
 * The outcome is the next state change out of SYN_SENT: ESTABLISHED, or CLOSE
 * after a RST (tcp:tcp_receive_reset -> refused), after an error the socket
 * reports (sock:inet_sk_error_report, right after the CLOSE on the same CPU:
 * ETIMEDOUT -> timeout, ...), or closed by its owner (tcp:tcp_destroy_sock).
 *
 * Storm safety: every connect, retransmit and outcome is counted exactly per
 * (pid, destination) in `flows`; at most FLOW_EVENT_BUDGET events per flow and
 * second go to the ring buffer, the rest are counted as "sampled" and the agent
 * reports them as aggregated events.
 *
 * Compile-time knobs (set by tcp/source.py): FLOW_EVENT_BUDGET, CONN_MAX, FLOW_MAX,
 * RINGBUF_PAGES.
 */
#include "tcp.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_CLOSE 7
#define E_CONNRESET 104
#define E_TIMEDOUT 110
#define E_CONNREFUSED 111

#define CONN_RESET_SEEN 1
#define CONN_CLOSING 2

struct conn {
	__u64 start_ns;
	__u64 close_ns;
	struct tcp_flow_key key;
	__u8 saddr[16];
	__u32 tid;
	__u32 retries;
	__u16 sport;
	__u8 flags;
	__u8 has_flow;
	char comm[TASK_COMM_LEN];
};

BPF_HASH(conns, u64, struct conn, CONN_MAX);
BPF_HASH(flows, struct tcp_flow_key, struct tcp_flow_value, FLOW_MAX);
BPF_PERCPU_ARRAY(stats, u64, TCP_NSTATS);
BPF_PERCPU_ARRAY(closing, u64, 1); /* skaddr whose SYN_SENT->CLOSE just ran on this CPU */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline void stat_add(int index, u64 n)
{
	u64 *value = stats.lookup(&index);
	if (value)
		*value += n; /* per-CPU: no atomics needed */
}

/* 1 = this flow may emit one more event this second (approximate; counts stay exact). */
static __always_inline int flow_budget_ok(struct tcp_flow_value *flow, u64 now)
{
	if (now - flow->window_start_ns > 1000000000ULL) {
		flow->window_start_ns = now;
		flow->window_events = 0;
	}
	return __sync_fetch_and_add(&flow->window_events, 1) < FLOW_EVENT_BUDGET;
}

static __always_inline void fill_event(struct tcp_event *ev, struct conn *c, u64 now, u8 kind)
{
	ev->ts_ns = now;
	ev->elapsed_ns = now - c->start_ns;
	ev->pid = c->key.pid;
	ev->tid = c->tid;
	ev->error = 0;
	__builtin_memcpy(ev->saddr, c->saddr, 16);
	__builtin_memcpy(ev->daddr, c->key.daddr, 16);
	ev->sport = c->sport;
	ev->dport = c->key.dport;
	ev->family = c->key.family;
	ev->kind = kind;
	ev->result = 0;
	__builtin_memcpy(ev->comm, c->comm, TASK_COMM_LEN);
}

static __always_inline void finish(u64 skaddr, struct conn *c, u8 result, s32 error, u64 when)
{
	u64 now = bpf_ktime_get_ns();
	struct tcp_flow_value *flow = c->has_flow ? flows.lookup(&c->key) : 0;
	int emit = 1;

	stat_add(TCP_STAT_OUTCOMES + (result % TCP_NRESULTS), 1);
	if (flow) {
		__sync_fetch_and_add(&flow->results[result % TCP_NRESULTS], 1);
		flow->last_ns = now;
		emit = flow_budget_ok(flow, now);
	}
	if (emit) {
		struct tcp_event *ev = events.ringbuf_reserve(sizeof(struct tcp_event));
		if (ev) {
			fill_event(ev, c, now, TCP_EV_CONNECT);
			ev->elapsed_ns = when - c->start_ns;
			ev->retries = c->retries;
			ev->result = result;
			ev->error = error;
			events.ringbuf_submit(ev, 0);
		} else {
			stat_add(TCP_STAT_RINGBUF_FULL, 1);
			emit = 0;
		}
	} else {
		stat_add(TCP_STAT_SAMPLED_OUT, 1);
	}
	if (!emit && flow)
		__sync_fetch_and_add(&flow->sampled_results[result % TCP_NRESULTS], 1);
	conns.delete(&skaddr);
}

static __always_inline void copy_addrs(u8 *dst16, u16 family, const u8 *v4, const u8 *v6)
{
	if (family == AF_INET) {
		__builtin_memset(dst16, 0, 16);
		__builtin_memcpy(dst16, v4, 4);
	} else {
		__builtin_memcpy(dst16, v6, 16);
	}
}

static __always_inline void flush_closing(u64 keep)
{
	int zero = 0;
	u64 *slot = closing.lookup(&zero);
	if (slot && *slot && *slot != keep)
		*slot = 0; /* no error followed: the owner closed it, tcp_destroy_sock will say so */
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != IPPROTO_TCP)
		return 0;
	u64 skaddr = (u64)args->skaddr;
	u64 now = bpf_ktime_get_ns();
	flush_closing(skaddr);

	if (args->oldstate == ST_CLOSE && args->newstate == ST_SYN_SENT) {
		struct conn c = {};
		u64 pid_tgid = bpf_get_current_pid_tgid();
		c.start_ns = now;
		c.key.pid = pid_tgid >> 32;
		c.tid = (u32)pid_tgid;
		c.key.family = args->family;
		c.key.dport = args->dport;
		copy_addrs(c.key.daddr, args->family, args->daddr, args->daddr_v6);
		copy_addrs(c.saddr, args->family, args->saddr, args->saddr_v6);
		c.sport = args->sport;
		bpf_get_current_comm(&c.comm, sizeof(c.comm));
		stat_add(TCP_STAT_CONNECTS, 1);

		struct tcp_flow_value *flow = flows.lookup(&c.key);
		if (!flow) {
			struct tcp_flow_value fresh = {};
			__builtin_memcpy(fresh.comm, c.comm, TASK_COMM_LEN);
			flows.update(&c.key, &fresh); /* fails only when full */
			flow = flows.lookup(&c.key);
		}
		if (flow) {
			__sync_fetch_and_add(&flow->connects, 1);
			flow->last_ns = now;
			c.has_flow = 1;
		} else {
			stat_add(TCP_STAT_FLOW_FULL, 1);
		}
		if (conns.update(&skaddr, &c) != 0)
			stat_add(TCP_STAT_CONN_FULL, 1);
		return 0;
	}

	if (args->oldstate != ST_SYN_SENT)
		return 0;
	struct conn *c = conns.lookup(&skaddr);
	if (!c)
		return 0;
	c->sport = args->sport;
	copy_addrs(c->saddr, args->family, args->saddr, args->saddr_v6);
	if (args->newstate == ST_ESTABLISHED) {
		finish(skaddr, c, TCP_RES_ESTABLISHED, 0, now);
	} else if (args->newstate == ST_CLOSE) {
		if (c->flags & CONN_RESET_SEEN) {
			finish(skaddr, c, TCP_RES_REFUSED, E_CONNREFUSED, now);
		} else {
			int zero = 0;
			u64 *slot = closing.lookup(&zero);
			c->flags |= CONN_CLOSING;
			c->close_ns = now;
			if (slot)
				*slot = skaddr;
		}
	}
	return 0;
}

TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
	if (args->protocol != IPPROTO_TCP)
		return 0;
	int zero = 0;
	u64 *slot = closing.lookup(&zero);
	if (!slot || !*slot)
		return 0;
	u64 skaddr = *slot;
	*slot = 0;
	struct conn *c = conns.lookup(&skaddr);
	if (!c || !(c->flags & CONN_CLOSING) || c->key.dport != args->dport)
		return 0;
	s32 error = args->error;
	if (error < 0)
		error = -error;
	u8 result = TCP_RES_UNREACHABLE;
	if (error == E_TIMEDOUT)
		result = TCP_RES_TIMEOUT;
	else if (error == E_CONNREFUSED)
		result = TCP_RES_REFUSED;
	else if (error == E_CONNRESET)
		result = TCP_RES_RESET;
	finish(skaddr, c, result, error, c->close_ns);
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
	u64 skaddr = (u64)args->skaddr;
	struct conn *c = conns.lookup(&skaddr);
	if (c)
		c->flags |= CONN_RESET_SEEN;
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
	u64 skaddr = (u64)args->skaddr;
	flush_closing(0);
	struct conn *c = conns.lookup(&skaddr);
	if (c)
		finish(skaddr, c, TCP_RES_CLOSED, 0, c->close_ns ? c->close_ns : bpf_ktime_get_ns());
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
	if (args->state != ST_SYN_SENT)
		return 0;
	u64 skaddr = (u64)args->skaddr;
	u64 now = bpf_ktime_get_ns();
	stat_add(TCP_STAT_RETRIES, 1);
	struct conn *c = conns.lookup(&skaddr);
	if (!c) {
		/* connect() started before we attached: no owner known */
		stat_add(TCP_STAT_UNKNOWN_RETRIES, 1);
		struct tcp_event *ev = events.ringbuf_reserve(sizeof(struct tcp_event));
		if (!ev) {
			stat_add(TCP_STAT_RINGBUF_FULL, 1);
			return 0;
		}
		__builtin_memset(ev, 0, sizeof(*ev));
		ev->ts_ns = now;
		ev->kind = TCP_EV_SYN_RETRY;
		ev->family = args->family;
		ev->sport = args->sport;
		ev->dport = args->dport;
		copy_addrs(ev->saddr, args->family, args->saddr, args->saddr_v6);
		copy_addrs(ev->daddr, args->family, args->daddr, args->daddr_v6);
		events.ringbuf_submit(ev, 0);
		return 0;
	}
	c->retries++;
	c->sport = args->sport;
	copy_addrs(c->saddr, args->family, args->saddr, args->saddr_v6);
	struct tcp_flow_value *flow = c->has_flow ? flows.lookup(&c->key) : 0;
	int emit = 1;
	if (flow) {
		__sync_fetch_and_add(&flow->retries, 1);
		flow->last_ns = now;
		emit = flow_budget_ok(flow, now);
	}
	if (emit) {
		struct tcp_event *ev = events.ringbuf_reserve(sizeof(struct tcp_event));
		if (ev) {
			fill_event(ev, c, now, TCP_EV_SYN_RETRY);
			ev->retries = c->retries;
			events.ringbuf_submit(ev, 0);
		} else {
			stat_add(TCP_STAT_RINGBUF_FULL, 1);
			emit = 0;
		}
	} else {
		stat_add(TCP_STAT_SAMPLED_OUT, 1);
	}
	if (!emit && flow)
		__sync_fetch_and_add(&flow->sampled_retries, 1);
	return 0;
}
