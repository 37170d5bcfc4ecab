/* DNS on the wire: cgroup_skb egress + ingress on the cgroup v2 root.
 *
 * Sees the sockets of every network namespace. For packets to (egress) or from
 * (ingress) a configured DNS port, over UDP or TCP, IPv4 or IPv6.
 * UDP queries are paired with their answers here, in the kernel: a query waits in
 * the bounded hash map `inflight` (socket cookie + DNS id -> send time, owner,
 * addresses, the query bytes); its answer takes it out and writes ONE ring-buffer
 * record holding both (half the records of a flood, and no user-space matching
 * table on the fast path). Everything else goes out as one record per packet with
 * a bounded payload prefix: TCP (length-prefixed, segmented: user space reassembles
 * message starts), queries too long to store, answers whose query is not in the map
 * (user space took it out as unanswered, or the map was full), and a query whose
 * socket sends the same id again (taken out so user space sees both sends, in order).
 * Unanswered queries stay in the map: user space sweeps it once a second; when the
 * map is full, queries go out unpaired (as packets) until there is room again.
 * One ring buffer for everything keeps a query ahead of its answer.
 * Owner process: bpf_get_current_pid_tgid() is only right when a process sends,
 * so the first egress packet of a socket (UDP query, TCP SYN) records
 * socket cookie -> owner (and announces it with a DNS_KIND_OWNER record), and every
 * later packet of that socket uses it. Each query gets the owner's next send
 * sequence number (`qseq`), so user space can restore send order across pairs.
 * Only packet bytes are read (bpf_skb_load_bytes): no kernel struct.
 * Both programs always return 1: dnstrace observes, never drops.
 */
#include <uapi/linux/bpf.h>
#include "dns.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096
#endif
#ifndef OWNER_MAX
#define OWNER_MAX 65536
#endif
#ifndef INFLIGHT_MAX
#define INFLIGHT_MAX 32768
#endif

#define PROTO_TCP 6
#define PROTO_UDP 17
#define TCP_FLAG_SYN 0x02
#define DNS_FLAG_QR 0x80 /* in the third payload byte */
#define ERR_EXIST 17      /* EEXIST: map insert of a key already there */

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(scratch, struct dns_pair, 1);
BPF_PERCPU_ARRAY(query_scratch, struct dns_query, 1);
BPF_HASH(dns_ports, u16, u8, 64);
BPF_TABLE("lru_hash", u64, struct dns_owner, owners, OWNER_MAX);
BPF_TABLE("lru_hash", u32, u32, send_seq, OWNER_MAX); /* tgid -> next qseq */
/* A plain (preallocated) hash, not an LRU: nothing vanishes silently; when it is full,
 * queries are reported unpaired instead. */
BPF_HASH(inflight, struct dns_query_key, struct dns_query, INFLIGHT_MAX);
BPF_PERCPU_ARRAY(counters, u64, DNS_CNT_MAX);

static __always_inline void count(int index)
{
	u32 key = index;
	u64 *value = counters.lookup(&key);
	if (value)
		(*value)++; /* per-CPU slot: no atomic needed */
}

/* Default wake-ups on purpose (not dt_wakeup_flags): the kernel wakes the agent only
 * when it has read everything before this record, so a flood it lags behind costs
 * no wake-ups, while a lone record (a new socket's owner, a pair) reaches it at once. */
static __always_inline void submit(void *record, u64 size, int lost_counter)
{
	if (events.ringbuf_output(record, size, 0) == 0)
		count(DNS_CNT_EVENTS);
	else
		count(lost_counter);
}

static __always_inline u32 next_qseq(u32 pid)
{
	u32 *next = send_seq.lookup(&pid);
	if (next) {
		/* not atomic (this LLVM rejects using XADD's result): two threads of one
		 * process sending at once on two CPUs may share a number; user space then
		 * only loses the ordering hint for them */
		u32 qseq = *next;
		*next = qseq + 1;
		return qseq;
	}
	u32 one = 1;
	send_seq.update(&pid, &one);
	return 0;
}

/* Declare ``var``, the number of bytes to copy from the packet: ``len`` clamped to ``max``,
 * 64-bit and opaque to clang after each barrier, so the verifier sees the bound checked on the
 * very register passed to bpf_skb_load_bytes (clang would otherwise fold the check away).
 * Out of range (0 bytes), the program returns 1: the packet is allowed, nothing is recorded. */
#define CLAMP_CAPTURE(var, len, max)                 \
	u64 var = (len);                             \
	asm volatile("" : "+r"(var));                \
	if (var > (max))                             \
		var = (max);                         \
	asm volatile("" : "+r"(var));                \
	if (var < 1 || var > (max))                  \
		return 1

/* The header fields every record kind sets the same way (pid, tid, qseq, addresses and
 * comm differ per kind and are set by the caller). */
static __always_inline void set_hdr(struct dns_event_hdr *h, u64 ts, u64 cookie, u32 tcp_seq, u16 sport,
				    u16 dport, u32 payload_len, u8 family, u8 proto, u8 dir, u8 kind)
{
	h->ts_ns = ts;
	h->cookie = cookie;
	h->tcp_seq = tcp_seq;
	h->sport = sport;
	h->dport = dport;
	h->payload_len = payload_len > 0xffff ? 0xffff : payload_len;
	h->family = family;
	h->proto = proto;
	h->dir = dir;
	h->kind = kind;
	h->reserved = 0;
}

/* A query taken out of the map (its id was sent again): as a plain egress packet. */
static __always_inline void emit_query(struct dns_event *e, struct dns_query *q, u64 cookie)
{
	set_hdr(&e->hdr, q->ts_ns, cookie, 0, q->sport, q->dport, 0, q->family, PROTO_UDP, DNS_DIR_EGRESS,
		DNS_KIND_PACKET);
	e->hdr.pid = q->pid;
	e->hdr.tid = q->tid;
	e->hdr.qseq = q->qseq;
	__builtin_memcpy(e->hdr.saddr, q->saddr, 16);
	__builtin_memcpy(e->hdr.daddr, q->daddr, 16);
	__builtin_memcpy(e->hdr.comm, q->comm, TASK_COMM_LEN);
	__builtin_memcpy(e->data, q->data, DNS_QUERY_CAPTURE);
	u64 len = q->len;
	asm volatile("" : "+r"(len));
	if (len > DNS_QUERY_CAPTURE)
		len = DNS_QUERY_CAPTURE;
	e->hdr.payload_len = len;
	e->hdr.cap_len = len;
	submit(e, sizeof(struct dns_event_hdr) + len, DNS_CNT_RINGBUF_FULL);
}

static __always_inline int handle(struct __sk_buff *skb, int dir)
{
	u32 zero = 0;
	struct dns_pair *p = scratch.lookup(&zero);
	if (!p)
		return 1;
	struct dns_event *e = (struct dns_event *)p; /* same header; data right after it */

	u8 ip[40];
	u32 l4_off, ip_end;
	u8 proto, family;
	if (bpf_skb_load_bytes(skb, 0, ip, 20) < 0)
		return 1;
	u8 version = ip[0] >> 4;
	if (version == 4) {
		u32 ihl = (ip[0] & 0x0f) * 4;
		u16 frag = ((ip[6] << 8) | ip[7]) & 0x1fff;
		if (frag)
			return 1; /* no L4 header in later fragments */
		proto = ip[9];
		if (proto != PROTO_UDP && proto != PROTO_TCP)
			return 1;
		if (ihl < 20) {
			count(DNS_CNT_MALFORMED);
			return 1;
		}
		family = 4;
		l4_off = ihl;
		ip_end = (ip[2] << 8) | ip[3];
		__builtin_memset(p->hdr.saddr, 0, 32);
		__builtin_memcpy(p->hdr.saddr, ip + 12, 4);
		__builtin_memcpy(p->hdr.daddr, ip + 16, 4);
	} else if (version == 6) {
		if (bpf_skb_load_bytes(skb, 0, ip, 40) < 0)
			return 1;
		proto = ip[6]; /* extension headers are not followed */
		if (proto != PROTO_UDP && proto != PROTO_TCP)
			return 1;
		family = 6;
		l4_off = 40;
		ip_end = 40 + ((ip[4] << 8) | ip[5]);
		__builtin_memcpy(p->hdr.saddr, ip + 8, 16);
		__builtin_memcpy(p->hdr.daddr, ip + 24, 16);
	} else {
		return 1;
	}
	if (ip_end > skb->len || ip_end == 0)
		ip_end = skb->len; /* GSO or bogus length: trust what is there */

	u8 l4[20];
	if (bpf_skb_load_bytes(skb, l4_off, l4, 8) < 0)
		return 1;
	u16 sport = (l4[0] << 8) | l4[1];
	u16 dport = (l4[2] << 8) | l4[3];
	u16 dns_port = dir == DNS_DIR_EGRESS ? dport : sport;
	if (!dns_ports.lookup(&dns_port))
		return 1;

	u64 cookie = bpf_get_socket_cookie(skb);
	u32 payload_off, payload_len, seq = 0;
	u8 syn = 0;
	if (proto == PROTO_UDP) {
		u32 udp_len = (l4[4] << 8) | l4[5];
		if (udp_len < 8 + 12 || l4_off + udp_len > ip_end) {
			count(DNS_CNT_MALFORMED);
			return 1;
		}
		payload_off = l4_off + 8;
		payload_len = udp_len - 8;
	} else {
		if (bpf_skb_load_bytes(skb, l4_off, l4, 20) < 0)
			return 1;
		u32 doff = (l4[12] >> 4) * 4;
		syn = l4[13] & TCP_FLAG_SYN;
		seq = ((u32)l4[4] << 24) | ((u32)l4[5] << 16) | ((u32)l4[6] << 8) | l4[7];
		if (doff < 20 || l4_off + doff > ip_end) {
			count(DNS_CNT_MALFORMED);
			return 1;
		}
		payload_off = l4_off + doff;
		payload_len = ip_end - payload_off;
	}

	u64 now = bpf_ktime_get_ns();
	struct dns_owner *owner;
	/* lookup first: an LRU map's insert takes (and may evict) a node even when the key exists */
	if (dir == DNS_DIR_EGRESS && !owners.lookup(&cookie)) {
		u64 pid_tgid = bpf_get_current_pid_tgid();
		if (pid_tgid >> 32) {
			struct dns_owner fresh = {};
			fresh.pid = pid_tgid >> 32;
			fresh.tid = (u32)pid_tgid;
			bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
			if (owners.insert(&cookie, &fresh) == 0) { /* first egress wins */
				set_hdr(&e->hdr, now, cookie, 0, sport, dport, 0, family, proto, dir, DNS_KIND_OWNER);
				e->hdr.pid = fresh.pid;
				e->hdr.tid = fresh.tid;
				e->hdr.qseq = 0;
				e->hdr.cap_len = 0;
				__builtin_memcpy(e->hdr.comm, fresh.comm, TASK_COMM_LEN);
				submit(e, sizeof(struct dns_event_hdr), DNS_CNT_RINGBUF_FULL);
			}
		}
	}
	if (syn || payload_len == 0)
		return 1; /* handshake and pure ACKs carry no DNS */

	u8 head[4] = {}; /* DNS id and flags (UDP only: TCP starts with the length prefix) */
	if (proto == PROTO_UDP && bpf_skb_load_bytes(skb, payload_off, head, 4) < 0) {
		count(DNS_CNT_MALFORMED);
		return 1;
	}
	struct dns_query_key key = {};
	key.cookie = cookie;
	key.id = (head[0] << 8) | head[1];

	if (proto == PROTO_UDP && dir == DNS_DIR_INGRESS && (head[2] & DNS_FLAG_QR)) {
		struct dns_query *q = inflight.lookup(&key);
		if (q) {
			p->query_ts_ns = q->ts_ns;
			p->query_len = q->len;
			p->hdr.pid = q->pid;
			p->hdr.tid = q->tid;
			p->hdr.qseq = q->qseq;
			__builtin_memcpy(p->hdr.comm, q->comm, TASK_COMM_LEN);
			__builtin_memcpy(p->data, q->data, DNS_QUERY_CAPTURE);
			if (inflight.delete(&key) == 0) { /* not taken meanwhile by the user-space sweep */
				count(DNS_CNT_PAIRED);
				set_hdr(&p->hdr, now, cookie, 0, sport, dport, payload_len, family, proto, dir,
					DNS_KIND_PAIR);
				CLAMP_CAPTURE(cap, payload_len, DNS_MAX_CAPTURE);
				u64 qlen = p->query_len;
				asm volatile("" : "+r"(qlen));
				if (qlen > DNS_QUERY_CAPTURE)
					return 1;
				/* the answer right after the query's bytes */
				if (bpf_skb_load_bytes(skb, payload_off, p->data + qlen, cap) < 0) {
					count(DNS_CNT_MALFORMED);
					return 1;
				}
				p->hdr.cap_len = cap;
				submit(p, sizeof(struct dns_pair) - sizeof(p->data) + qlen + cap, DNS_CNT_LOST_PAIRS);
				return 1;
			}
		}
	}

	owner = owners.lookup(&cookie);
	if (owner) {
		e->hdr.pid = owner->pid;
		e->hdr.tid = owner->tid;
		__builtin_memcpy(e->hdr.comm, owner->comm, TASK_COMM_LEN);
	} else {
		count(DNS_CNT_NO_OWNER);
		e->hdr.pid = 0;
		e->hdr.tid = 0;
		__builtin_memset(e->hdr.comm, 0, TASK_COMM_LEN);
	}
	e->hdr.qseq = dir == DNS_DIR_EGRESS ? next_qseq(e->hdr.pid) : 0;

	if (proto == PROTO_UDP && dir == DNS_DIR_EGRESS && !(head[2] & DNS_FLAG_QR) &&
	    payload_len <= DNS_QUERY_CAPTURE) {
		struct dns_query *fresh = query_scratch.lookup(&zero);
		if (!fresh)
			return 1;
		CLAMP_CAPTURE(qcap, payload_len, DNS_QUERY_CAPTURE);
		if (bpf_skb_load_bytes(skb, payload_off, fresh->data, qcap) < 0) {
			count(DNS_CNT_MALFORMED);
			return 1;
		}
		fresh->ts_ns = now;
		fresh->pid = e->hdr.pid;
		fresh->tid = e->hdr.tid;
		fresh->qseq = e->hdr.qseq;
		fresh->sport = sport;
		fresh->dport = dport;
		__builtin_memcpy(fresh->saddr, e->hdr.saddr, 16);
		__builtin_memcpy(fresh->daddr, e->hdr.daddr, 16);
		fresh->len = qcap;
		fresh->family = family;
		fresh->pad = 0;
		__builtin_memcpy(fresh->comm, e->hdr.comm, TASK_COMM_LEN);
		long err = inflight.insert(&key, fresh);
		if (err == 0) {
			count(DNS_CNT_INFLIGHT_ADDED);
			return 1;
		}
		if (err == -ERR_EXIST) {
			struct dns_query *previous = inflight.lookup(&key);
			if (previous) {
				/* the same id again on this socket: the earlier send goes out first, as a packet */
				emit_query(e, previous, cookie);
				if (inflight.delete(&key) == 0)
					count(DNS_CNT_RESENT);
			}
			if (inflight.update(&key, fresh) == 0) {
				count(DNS_CNT_INFLIGHT_ADDED);
				return 1;
			}
		}
		/* the map is full (user space sweeps it once a second): this query goes out
		 * unpaired, as a packet, and its answer will too */
		count(DNS_CNT_UNPAIRED_FULL);
		emit_query(e, fresh, cookie);
		return 1;
	}

	set_hdr(&e->hdr, now, cookie, seq, sport, dport, payload_len, family, proto, dir, DNS_KIND_PACKET);

	CLAMP_CAPTURE(cap, payload_len, DNS_MAX_CAPTURE);
	if (bpf_skb_load_bytes(skb, payload_off, e->data, cap) < 0) {
		count(DNS_CNT_MALFORMED);
		return 1;
	}
	e->hdr.cap_len = cap;
	submit(e, sizeof(struct dns_event_hdr) + cap, DNS_CNT_RINGBUF_FULL);
	return 1;
}

int dns_egress(struct __sk_buff *skb)
{
	return handle(skb, DNS_DIR_EGRESS);
}

int dns_ingress(struct __sk_buff *skb)
{
	return handle(skb, DNS_DIR_INGRESS);
}
