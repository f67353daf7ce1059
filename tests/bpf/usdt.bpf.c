// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * USDT probes as libbpf tools write them, with libbpf's own usdt.bpf.h:
 * BPF_USDT() unpacks the arguments through bpf_usdt_arg(), and
 * bpf_usdt_arg_cnt() / bpf_usdt_cookie() read the spec the loader wrote
 * into __bpf_usdt_specs. userbpf plays libbpf's part (tests/usdt.rs).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 12);
	__type(key, __u32);
	__type(value, __u64);
} usdt_counts SEC(".maps");

/* usdt_counts[0]: on_add hits, [1]: last a, [2]: last b, [3]: argument
 * count, [4]: cookie; [5]: on_gated hits, [6]: its last argument, [7]: its
 * cookie; [8]: on_multi hits, [9]: the sum of its arguments, [10]: its
 * argument count, [11]: bpf_usdt_arg(ctx, 1, ...)'s result for a probe
 * with one argument (-ENOENT). */

static __always_inline void set(__u32 k, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&usdt_counts, &k);

	if (p)
		*p = v;
}

static __always_inline void add(__u32 k, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&usdt_counts, &k);

	if (p)
		__sync_fetch_and_add(p, v);
}

SEC("usdt")
int BPF_USDT(on_add, int a, long b)
{
	add(0, 1);
	set(1, (__s64)a);
	set(2, b);
	set(3, (__s64)bpf_usdt_arg_cnt(ctx));
	set(4, bpf_usdt_cookie(ctx));
	return 0;
}

SEC("usdt/libuserbpf_usdt_demo.so:demo:gated")
int BPF_USDT(on_gated, long x)
{
	add(5, 1);
	set(6, x);
	set(7, bpf_usdt_cookie(ctx));
	return 0;
}

SEC("usdt")
int on_multi(struct pt_regs *ctx)
{
	long v = 0, none = 0;

	add(8, 1);
	if (bpf_usdt_arg(ctx, 0, &v) == 0)
		add(9, v);
	set(10, (__s64)bpf_usdt_arg_cnt(ctx));
	set(11, (__s64)bpf_usdt_arg(ctx, 1, &none));
	return 0;
}
