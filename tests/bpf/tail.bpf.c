// SPDX-License-Identifier: GPL-2.0 OR MIT
// Tail calls through a program array initialised in the object, in XDP
// (the kernel allows program arrays in XDP, not in sleepable programs).
// The packet's first 4 bytes hold the slot to jump to; the next 4 the
// trail of programs that ran, one digit each.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u32 index;
	__u32 trail;
};

int target_a(struct xdp_md *ctx);
int target_b(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct xdp_md *));
} jmp SEC(".maps") = {
	.values = {
		[1] = (void *)&target_a,
		[3] = (void *)&target_b,
	},
};

static __always_inline struct args *args_of(struct xdp_md *ctx)
{
	struct args *a = (void *)(long)ctx->data;

	if ((void *)(a + 1) > (void *)(long)ctx->data_end)
		return 0;
	return a;
}

SEC("xdp")
int entry(struct xdp_md *ctx)
{
	struct args *a = args_of(ctx);

	if (!a)
		return XDP_ABORTED;
	a->trail = 1;
	bpf_tail_call(ctx, &jmp, a->index);
	/* Reached only when the slot is empty. */
	a = args_of(ctx);
	if (!a)
		return XDP_ABORTED;
	a->trail = a->trail * 10 + 9;
	return XDP_DROP;
}

SEC("xdp")
int target_a(struct xdp_md *ctx)
{
	struct args *a = args_of(ctx);

	if (!a)
		return XDP_ABORTED;
	a->trail = a->trail * 10 + 2;
	/* Chain on to slot 3. */
	bpf_tail_call(ctx, &jmp, 3);
	return XDP_ABORTED;
}

SEC("xdp")
int target_b(struct xdp_md *ctx)
{
	struct args *a = args_of(ctx);

	if (!a)
		return XDP_ABORTED;
	a->trail = a->trail * 10 + 3;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
