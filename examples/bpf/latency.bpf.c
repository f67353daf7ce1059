// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * A latency histogram of a function: a uprobe stamps the entry time per
 * thread, a uretprobe adds the time to the function's return to a log2
 * histogram (bucket i: [2^i, 2^(i+1)) ns).
 *
 *   userbpf exec examples/bpf/latency.bpf.o -- userbpf-demo 1000
 *
 * The probes target `demo_work` in the traced executable
 * (/proc/self/exe); give another with
 * --prog on_entry=BINARY:FUNCTION --prog on_return=BINARY:FUNCTION.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} hist SEC(".maps");

SEC("uprobe//proc/self/exe:demo_work")
int BPF_KPROBE(on_entry)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&start, &tid, &now, BPF_ANY);
	return 0;
}

SEC("uretprobe//proc/self/exe:demo_work")
int BPF_KRETPROBE(on_return)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 *t0 = bpf_map_lookup_elem(&start, &tid);
	__u64 delta, *slot;
	__u32 bucket = 0;

	if (!t0)
		return 0;
	delta = bpf_ktime_get_ns() - *t0;
	bpf_map_delete_elem(&start, &tid);
	while (delta > 1 && bucket < 63) {
		delta >>= 1;
		bucket++;
	}
	slot = bpf_map_lookup_elem(&hist, &bucket);
	if (slot)
		__sync_fetch_and_add(slot, 1);
	return 0;
}
