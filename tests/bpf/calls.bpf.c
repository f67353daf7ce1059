// SPDX-License-Identifier: GPL-2.0 OR MIT
// bpf-to-bpf calls: a static subprogram, a global function, a loop.
// Runs as a `syscall` program on a caller-provided context.
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u64 a;
	__u64 b;
	__u64 out;
};

static __noinline __u64 mix(__u64 x, __u64 y)
{
	return x * 31 + (y ^ 0x5a);
}

__noinline __u64 finish(__u64 x)
{
	return (x >> 7) ^ (x << 3);
}

SEC("syscall")
int calls(struct args *ctx)
{
	__u64 s = 0;

	for (int i = 0; i < 16; i++)
		s = mix(s, ctx->a + i);
	ctx->out = finish(s) ^ ctx->b;
	return (int)(ctx->out & 0x7fffffff);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
