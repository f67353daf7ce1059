// SPDX-License-Identifier: GPL-2.0 OR MIT
// An array of maps initialised with two inner arrays: the program picks an
// inner map by index and adds to its first value. A hash of maps does the
// same by key. A third array of maps starts empty: user space fills it at
// run time, and only maps of its inner definition's shape are found there
// (`other`, of another value size, is not).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

struct inner inner_a SEC(".maps");
struct inner inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = { [0] = &inner_a, [1] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner);
} by_key SEC(".maps") = {
	.values = { [5] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, __u64);
	});
} runtime SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} other SEC(".maps");

struct args {
	__u32 which;
	__u32 pad;
	__u64 add;
};

SEC("syscall")
int pick(struct args *ctx)
{
	__u32 which = ctx->which, zero = 0;
	void *inner = bpf_map_lookup_elem(&outer, &which);
	__u64 *v;

	if (!inner)
		return -1;
	v = bpf_map_lookup_elem(inner, &zero);
	if (!v)
		return -2;
	*v += ctx->add;
	return *v;
}

SEC("syscall")
int pick_by_key(struct args *ctx)
{
	__u32 key = ctx->which, zero = 0;
	void *inner = bpf_map_lookup_elem(&by_key, &key);
	__u64 *v;

	if (!inner)
		return -1;
	v = bpf_map_lookup_elem(inner, &zero);
	if (!v)
		return -2;
	*v += ctx->add;
	return *v;
}

SEC("syscall")
int pick_runtime(struct args *ctx)
{
	__u32 which = ctx->which, zero = 0;
	void *inner = bpf_map_lookup_elem(&runtime, &which);
	__u64 *v;

	if (!inner)
		return -1;
	v = bpf_map_lookup_elem(inner, &zero);
	if (!v)
		return -2;
	*v += ctx->add;
	return *v;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
