// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * A user-space syscall policy: openat of a path that starts with the
 * configured prefix fails with -EACCES (bpf_override_return on a
 * sys_enter tracepoint, which userbpf's in-process syscall hooks allow:
 * the call is not made). `denied` counts the refusals.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
	char __data[0];
};

#define PREFIX_LEN 16

/* The refused prefix (set before the maps are created). */
const volatile char prefix[PREFIX_LEN] = "/tmp/userbpf-den";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} denied SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int deny_prefix(struct trace_event_raw_sys_enter *ctx)
{
	char path[PREFIX_LEN] = {};
	__u32 k = 0;
	__u64 *n;
	int i;

	if (bpf_probe_read_user_str(path, sizeof(path), (const char *)ctx->args[1]) < PREFIX_LEN)
		return 0;
	for (i = 0; i < PREFIX_LEN; i++)
		if (path[i] != prefix[i] && i < PREFIX_LEN - 1)
			return 0;
	n = bpf_map_lookup_elem(&denied, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
	bpf_override_return((struct pt_regs *)ctx, -13 /* -EACCES */);
	return 0;
}
