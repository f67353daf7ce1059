// SPDX-License-Identifier: GPL-2.0 OR MIT
// A bloom filter with three hash functions (map_extra), driven by XDP
// packets: { u64 op; u64 value; } with op 0 = push, 1 = peek. The verdict
// is XDP_PASS when the operation succeeds (peek: maybe present) and
// XDP_DROP when it fails (peek: definitely absent).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 1000);
	__type(value, __u64);
	__uint(map_extra, 3);
} seen SEC(".maps");

struct cmd {
	__u64 op;
	__u64 value;
};

SEC("xdp")
int bloom(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	__u64 value;
	long ret;

	if ((void *)(c + 1) > data_end)
		return XDP_ABORTED;
	value = c->value;
	if (c->op == 0)
		ret = bpf_map_push_elem(&seen, &value, BPF_ANY);
	else
		ret = bpf_map_peek_elem(&seen, &value);
	return ret == 0 ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
