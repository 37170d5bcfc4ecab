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

#endif
