// SPDX-License-Identifier: GPL-2.0 OR MIT
// Tail calls through a program array initialised in the object.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u32 index;
	__u32 trail; /* out: which programs ran, one digit each */
};

int target_a(struct args *ctx);
int target_b(struct args *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__array(values, int (struct args *));
} jmp SEC(".maps") = {
	.values = {
		[1] = (void *)&target_a,
		[3] = (void *)&target_b,
	},
};

SEC("syscall")
int entry(struct args *ctx)
{
	ctx->trail = 1;
	bpf_tail_call(ctx, &jmp, ctx->index);
	/* Reached only when the slot is empty. */
	ctx->trail = ctx->trail * 10 + 9;
	return -1;
}

SEC("syscall")
int target_a(struct args *ctx)
{
	ctx->trail = ctx->trail * 10 + 2;
	/* Chain on to slot 3. */
	bpf_tail_call(ctx, &jmp, 3);
	return -2;
}

SEC("syscall")
int target_b(struct args *ctx)
{
	ctx->trail = ctx->trail * 10 + 3;
	return 42;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
