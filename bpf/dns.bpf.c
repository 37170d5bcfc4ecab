/* DNS on the wire: cgroup_skb egress + ingress on the cgroup v2 root.
 *
 * Sees the sockets of every network namespace. For packets to (egress) or from
 * (ingress) a configured DNS port, over UDP or TCP, IPv4 or IPv6, it copies the
 * addresses, ports and a bounded prefix of the DNS payload into one ring buffer
 * (one buffer for both directions keeps a query ahead of its answer).
 * Owner process: bpf_get_current_pid_tgid() is only right when a process sends,
 * so the first egress packet of a socket (UDP query, TCP SYN) records
 * socket cookie -> owner, and every later packet of that socket uses it.
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

#define PROTO_TCP 6
#define PROTO_UDP 17
#define TCP_FLAG_SYN 0x02

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(scratch, struct dns_event, 1);
BPF_HASH(dns_ports, u16, u8, 64);
BPF_TABLE("lru_hash", u64, struct dns_owner, owners, OWNER_MAX);
BPF_PERCPU_ARRAY(counters, u64, DNS_CNT_MAX);

static __always_inline void count(int index)
{
	u64 *value = counters.lookup(&index);
	if (value)
		(*value)++; /* per-CPU slot: no atomic needed */
}

static __always_inline int handle(struct __sk_buff *skb, int dir)
{
	u32 zero = 0;
	struct dns_event *e = scratch.lookup(&zero);
	if (!e)
		return 1;

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
		__builtin_memset(e->hdr.saddr, 0, 32);
		__builtin_memcpy(e->hdr.saddr, ip + 12, 4);
		__builtin_memcpy(e->hdr.daddr, ip + 16, 4);
	} else if (version == 6) {
		if (bpf_skb_load_bytes(skb, 0, ip, 40) < 0)
			return 1;
		proto = ip[6]; /* extension headers are not followed */
		if (proto != PROTO_UDP && proto != PROTO_TCP)
			return 1;
		family = 6;
		l4_off = 40;
		ip_end = 40 + ((ip[4] << 8) | ip[5]);
		__builtin_memcpy(e->hdr.saddr, ip + 8, 16);
		__builtin_memcpy(e->hdr.daddr, ip + 24, 16);
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

	struct dns_owner *owner;
	if (dir == DNS_DIR_EGRESS) {
		u64 pid_tgid = bpf_get_current_pid_tgid();
		if (pid_tgid >> 32) {
			struct dns_owner fresh = {};
			fresh.pid = pid_tgid >> 32;
			fresh.tid = (u32)pid_tgid;
			bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
			owners.insert(&cookie, &fresh); /* first egress wins */
		}
	}
	if (syn || payload_len == 0)
		return 1; /* handshake and pure ACKs carry no DNS */

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
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->hdr.cookie = cookie;
	e->hdr.tcp_seq = seq;
	e->hdr.sport = sport;
	e->hdr.dport = dport;
	e->hdr.payload_len = payload_len > 0xffff ? 0xffff : payload_len;
	e->hdr.family = family;
	e->hdr.proto = proto;
	e->hdr.dir = dir;
	e->hdr.pad = 0;

	/* 64-bit, and opaque to clang after the barrier, so the verifier sees the
	 * bound checked on the very register passed to bpf_skb_load_bytes. */
	u64 cap = payload_len;
	asm volatile("" : "+r"(cap));
	if (cap > DNS_MAX_CAPTURE)
		cap = DNS_MAX_CAPTURE;
	asm volatile("" : "+r"(cap));
	if (cap < 1 || cap > DNS_MAX_CAPTURE)
		return 1;
	if (bpf_skb_load_bytes(skb, payload_off, e->data, cap) < 0) {
		count(DNS_CNT_MALFORMED);
		return 1;
	}
	e->hdr.cap_len = cap;
	/* Default wake-ups on purpose (not dt_wakeup_flags): the kernel wakes the agent
	 * only when it has read everything before this record, so a flood it lags
	 * behind costs no wake-ups, while a lone query reaches it at once: its process
	 * is looked up (its resolv.conf) while it still waits for the answer. Batching
	 * answers' wake-ups would leave unread records that silence the next query's. */
	if (events.ringbuf_output(e, sizeof(struct dns_event_hdr) + cap, 0) == 0)
		count(DNS_CNT_EVENTS);
	else
		count(DNS_CNT_RINGBUF_FULL);
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
