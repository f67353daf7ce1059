// SPDX-License-Identifier: GPL-2.0 OR MIT
// Open-coded numeric iterators (the kfuncs behind libbpf's bpf_for() and
// bpf_repeat()), declared here as libbpf's bpf_experimental.h does.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* As in the kernel's UAPI (newer than this libc's headers). */
struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __weak __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __weak __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __weak __ksym;

struct args {
	__s32 start;
	__s32 end;
	__s64 sum;
	__s64 count;
	__s64 new_rc;
};

SEC("syscall")
int sum_range(struct args *ctx)
{
	struct bpf_iter_num it;
	__s64 sum = 0, count = 0;
	int *v;

	ctx->new_rc = bpf_iter_num_new(&it, ctx->start, ctx->end);
	while ((v = bpf_iter_num_next(&it))) {
		sum += *v;
		count++;
	}
	bpf_iter_num_destroy(&it);
	ctx->sum = sum;
	ctx->count = count;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
