// SPDX-License-Identifier: GPL-2.0 OR MIT
// XDP with an LPM trie of IPv4 prefixes: the value of the longest prefix
// matching the source address decides the verdict (1 drop, 2 pass).
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct lpm_key {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u32);
} prefixes SEC(".maps");

SEC("xdp")
int by_prefix(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct lpm_key key;
	__u32 *verdict;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	key.prefixlen = 32;
	key.addr = ip->saddr;
	verdict = bpf_map_lookup_elem(&prefixes, &key);
	return verdict ? *verdict : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
