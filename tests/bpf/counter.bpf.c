// SPDX-License-Identifier: GPL-2.0 OR MIT
// Hash and array maps and global data from a `syscall` program:
// counts[key] += add * scale, returns the new count.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u32 key;
	__u32 pad;
	__u64 add;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} by_slot SEC(".maps");

const volatile __u64 scale = 3;
__u64 runs = 100;
__u32 last_key;

SEC("syscall")
int count(struct args *ctx)
{
	__u32 key = ctx->key;
	__u32 slot = key & 7;
	__u64 add = ctx->add * scale;
	__u64 *v, *s;

	runs++;
	last_key = key;
	s = bpf_map_lookup_elem(&by_slot, &slot);
	if (s)
		__sync_fetch_and_add(s, 1);
	v = bpf_map_lookup_elem(&counts, &key);
	if (!v) {
		bpf_map_update_elem(&counts, &key, &add, BPF_NOEXIST);
		return (int)add;
	}
	__sync_fetch_and_add(v, add);
	if (*v > 1000)
		bpf_map_delete_elem(&counts, &key);
	return (int)*v;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
