// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Fault injection in user space: makes `demo_reserve(13)` fail with
 * -ENOMEM without running it (bpf_override_return on a uprobe, which
 * userbpf allows: the kernel offers it only on kprobes of error-injectable
 * kernel functions). `injected` counts the failures made.
 *
 *   userbpf exec examples/bpf/fault_inject.bpf.o -- userbpf-demo 20
 *   -> demo: 20 calls, ..., 1 reservations failed, ...
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} injected SEC(".maps");

/* The size to fail (`--set unlucky=N` style configuration). */
const volatile __u64 unlucky = 13;

SEC("uprobe//proc/self/exe:demo_reserve")
int BPF_KPROBE(fail_reserve, __u64 bytes)
{
	__u32 k = 0;
	__u64 *n;

	if (bytes != unlucky)
		return 0;
	n = bpf_map_lookup_elem(&injected, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
	bpf_override_return(ctx, -12 /* -ENOMEM */);
	return 0;
}
