// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Counts getpid calls on the sys_enter_getpid tracepoint in an array map:
 * the program of the syscall-hook benchmark, the same object in the
 * kernel and in userbpf's in-process hooks.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx)
{
	__u32 k = 0;
	__u64 *n = bpf_map_lookup_elem(&calls, &k);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}
