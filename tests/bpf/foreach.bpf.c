// SPDX-License-Identifier: GPL-2.0 OR MIT
// bpf_for_each_map_elem over a hash map (sum, then update every value in
// place) and over an array (stopping early).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __u64);
} h SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} a SEC(".maps");

struct args {
	__u32 n;        /* keys 1..n go into the hash map */
	__u32 stop_at;  /* the array walk stops at this index */
	__u64 hash_sum;
	__u64 hash_calls;
	__u64 array_sum;
	__u64 array_calls;
	__u64 key_sum;
};

struct walk {
	__u64 sum;
	__u64 key_sum;
	__u32 stop_at;
};

static long sum_hash(void *map, __u32 *key, __u64 *val, struct walk *w)
{
	w->sum += *val;
	w->key_sum += *key;
	*val += 1000;
	return 0;
}

static long sum_array(void *map, __u32 *key, __u64 *val, struct walk *w)
{
	w->sum += *val;
	return *key == w->stop_at ? 1 : 0;
}

SEC("syscall")
int walk(struct args *ctx)
{
	struct walk w = { .stop_at = ctx->stop_at };
	__u32 i;

	for (i = 1; i <= 32 && i <= ctx->n; i++) {
		__u64 v = (__u64)i * 10;
		bpf_map_update_elem(&h, &i, &v, BPF_ANY);
	}
	for (i = 0; i < 8; i++) {
		__u64 v = (__u64)i * i + 1;
		bpf_map_update_elem(&a, &i, &v, BPF_ANY);
	}
	ctx->hash_calls = bpf_for_each_map_elem(&h, sum_hash, &w, 0);
	ctx->hash_sum = w.sum;
	ctx->key_sum = w.key_sum;
	w.sum = 0;
	ctx->array_calls = bpf_for_each_map_elem(&a, sum_array, &w, 0);
	ctx->array_sum = w.sum;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
