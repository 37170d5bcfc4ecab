/* New programs: one record (the pid) per exec, so the agent scans that process's libcs at once
 * instead of waiting for its periodic rescan (sched:sched_process_exec, a stable tracepoint). */
#ifndef EXEC_RINGBUF_PAGES
#define EXEC_RINGBUF_PAGES 8
#endif

BPF_RINGBUF_OUTPUT(execs, EXEC_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(exec_lost, __u64, 1);

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	__u32 *slot = execs.ringbuf_reserve(sizeof(__u32));
	if (!slot) {
		int zero = 0;
		__u64 *lost = exec_lost.lookup(&zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return 0;
	}
	*slot = bpf_get_current_pid_tgid() >> 32;
	execs.ringbuf_submit(slot, 0);
	return 0;
}
