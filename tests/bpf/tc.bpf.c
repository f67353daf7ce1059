// SPDX-License-Identifier: GPL-2.0 OR MIT
// A TC classifier on __sk_buff: direct packet access with data/data_end,
// counts per IP protocol, marks the TOS byte, drops UDP to port 9.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} bytes_by_proto SEC(".maps");

SEC("tc")
int classify(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp;
	__u32 proto;
	__u64 len = skb->len, *b;

	if ((void *)(ip + 1) > data_end || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	proto = ip->protocol;
	b = bpf_map_lookup_elem(&bytes_by_proto, &proto);
	if (b)
		__sync_fetch_and_add(b, len);
	else
		bpf_map_update_elem(&bytes_by_proto, &proto, &len, BPF_NOEXIST);
	ip->tos = 0x10;
	udp = (void *)(ip + 1);
	if (ip->protocol == IPPROTO_UDP && (void *)(udp + 1) <= data_end && udp->dest == bpf_htons(9))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
