// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Uprobes and uretprobes as bcc/libbpf tools write them: a call counter
 * (BPF_KPROBE), a return counter that keeps the last return value
 * (BPF_KRETPROBE), a fault injector (bpf_override_return, which userbpf
 * allows on uprobes) and reporters (ring buffer, trace_printk, perf
 * buffer). The counters are array maps so the kernel and userbpf run the
 * same program in the benchmarks.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

/* counts[0]: calls, [1]: last first argument, [2]: returns, [3]: last
 * return value. */

SEC("uprobe")
int BPF_KPROBE(count_calls, __u64 arg)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&counts, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	k = 1;
	v = bpf_map_lookup_elem(&counts, &k);
	if (v)
		*v = arg;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(count_returns, __u64 ret)
{
	__u32 k = 2;
	__u64 *v = bpf_map_lookup_elem(&counts, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	k = 3;
	v = bpf_map_lookup_elem(&counts, &k);
	if (v)
		*v = ret;
	return 0;
}

/* Makes the probed function fail with -ENOMEM (-12) when its first
 * argument is 13. */
SEC("uprobe")
int BPF_KPROBE(fail_unlucky, __u64 arg)
{
	if (arg == 13)
		bpf_override_return(ctx, -12);
	return 0;
}

/* Streams each call's argument through the ring buffer, and says hello
 * through the trace pipe for the first three. */
SEC("uprobe")
int BPF_KPROBE(report, __u64 arg)
{
	__u64 *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (e) {
		*e = arg;
		bpf_ringbuf_submit(e, 0);
	}
	if (arg < 3)
		bpf_printk("hello from call %llu", arg);
	return 0;
}

/* The same through a perf buffer (bpf_perf_event_output). */
SEC("uprobe")
int BPF_KPROBE(perf_report, __u64 arg)
{
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &arg, sizeof(arg));
	return 0;
}

/* Makes the probed function return -7 without running when its first
 * argument is 21: bpf_set_retval, the kernel's cgroup helper, which
 * userbpf's in-process hooks take as bpf_override_return with an int
 * (bpf_get_retval reads it back). */
SEC("uprobe")
int BPF_KPROBE(fail_with_retval, __u64 arg)
{
	__u32 k = 1;
	__u64 *v;

	if (arg != 21)
		return 0;
	bpf_set_retval(-7);
	v = bpf_map_lookup_elem(&counts, &k);
	if (v)
		*v = (__u64)(long)bpf_get_retval();
	return 0;
}
