// SPDX-License-Identifier: GPL-2.0 OR MIT
// Per-CPU hash and LRU per-CPU hash: a program adds to the running CPU's
// value of a key, creating it when absent.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} recent SEC(".maps");

struct args {
	__u32 key;
	__u32 pad;
	__u64 add;
};

static __always_inline __u64 add_to(void *map, __u32 *key, __u64 add)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (v) {
		*v += add;
		return *v;
	}
	bpf_map_update_elem(map, key, &add, BPF_NOEXIST);
	return add;
}

SEC("syscall")
int count(struct args *ctx)
{
	__u32 key = ctx->key;
	__u64 a = add_to(&counts, &key, ctx->add);
	__u64 b = add_to(&recent, &key, ctx->add * 2);

	return a + b;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
