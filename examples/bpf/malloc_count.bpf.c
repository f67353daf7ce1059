// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Counts malloc() calls per process: a uprobe on libc's malloc.
 *
 *   userbpf exec examples/bpf/malloc_count.bpf.o -- CMD ARGS...
 *
 * prints, when CMD exits, the `calls` map: pid => calls (and the bytes
 * asked for in `bytes`).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} bytes SEC(".maps");

/* map[pid] += n, never losing an update to a thread that created the
 * entry first. */
static void add(void *map, __u32 pid, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, &pid);

	if (!v) {
		__u64 zero = 0;

		bpf_map_update_elem(map, &pid, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(map, &pid);
		if (!v)
			return;
	}
	__sync_fetch_and_add(v, n);
}

SEC("uprobe/libc.so.6:malloc")
int BPF_KPROBE(count_malloc, __u64 size)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	add(&calls, pid, 1);
	add(&bytes, pid, size);
	return 0;
}
