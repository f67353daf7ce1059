// SPDX-License-Identifier: GPL-2.0 OR MIT
// Queue and stack maps: push the context's values, pop some back.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4);
	__type(value, __u32);
} fifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 4);
	__type(value, __u32);
} lifo SEC(".maps");

struct args {
	__u32 vals[6];
	__u32 pops;
	__s32 errs;   /* out: sum of the error codes seen */
	__u32 out[8]; /* out: popped values, queue then stack */
};

SEC("syscall")
int qs(struct args *ctx)
{
	__s32 errs = 0;

	for (int i = 0; i < 6; i++) {
		__u32 v = ctx->vals[i];

		errs += bpf_map_push_elem(&fifo, &v, 0);
		errs += bpf_map_push_elem(&lifo, &v, i >= 4 ? BPF_EXIST : 0);
	}
	for (int i = 0; i < 4; i++) {
		__u32 a = 0, b = 0;

		if (i >= ctx->pops)
			break;
		errs += bpf_map_pop_elem(&fifo, &a);
		errs += bpf_map_pop_elem(&lifo, &b);
		ctx->out[i] = a;
		ctx->out[4 + i] = b;
	}
	ctx->errs = errs;
	return errs;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
