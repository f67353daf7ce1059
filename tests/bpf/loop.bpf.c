// SPDX-License-Identifier: GPL-2.0 OR MIT
// A log2 histogram in a hash map, filled by a bpf_loop callback, in the
// style of the libbpf-tools. The loop stops at the first zero value.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_VALUES 16

struct args {
	__u64 values[MAX_VALUES];
	__u32 n;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} hist SEC(".maps");

struct loop_ctx {
	struct args *args;
	__u64 sum;
};

static __always_inline __u32 log2l(__u64 v)
{
	__u32 r = 0;

	while (v > 1 && r < 63) {
		v >>= 1;
		r++;
	}
	return r;
}

static long fill(__u32 i, struct loop_ctx *c)
{
	__u64 v;
	__u32 slot;
	__u64 one = 1, *cnt;

	if (i >= MAX_VALUES)
		return 1;
	v = c->args->values[i];
	if (v == 0)
		return 1;
	c->sum += v;
	slot = log2l(v);
	cnt = bpf_map_lookup_elem(&hist, &slot);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	else
		bpf_map_update_elem(&hist, &slot, &one, BPF_NOEXIST);
	return 0;
}

SEC("syscall")
int histogram(struct args *ctx)
{
	struct loop_ctx c = { .args = ctx, .sum = 0 };
	long n = bpf_loop(ctx->n, fill, &c, 0);

	ctx->values[0] = c.sum;
	return n;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
