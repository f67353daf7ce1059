// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Reads USDT probes of the demo program as libbpf's usdt.bpf.h programs
 * do: `demo:work` (no semaphore; its arguments are the iteration and the
 * result of demo_work) and `demo:tick` (behind a semaphore: the demo
 * computes and fires it only while a tracer is attached).
 *
 *   userbpf exec examples/bpf/usdt_reader.bpf.o -- userbpf-demo 100
 *   -> demo: 100 calls, ..., 100 ticks
 *
 * `stats`: [0] work probes seen, [1] sum of their results (the demo's
 * sum), [2] tick probes seen, [3] the last tick's running sum.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static void add(__u32 k, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &k);

	if (v)
		__sync_fetch_and_add(v, n);
}

SEC("usdt//proc/self/exe:demo:work")
int BPF_USDT(on_work, __u64 i, __u64 result)
{
	add(0, 1);
	add(1, result);
	return 0;
}

SEC("usdt//proc/self/exe:demo:tick")
int BPF_USDT(on_tick, __u64 i, __u64 sum)
{
	__u32 k = 3;
	__u64 *v;

	add(2, 1);
	v = bpf_map_lookup_elem(&stats, &k);
	if (v)
		*v = sum;
	return 0;
}
