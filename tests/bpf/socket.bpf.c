// SPDX-License-Identifier: GPL-2.0 OR MIT
// A socket filter with the legacy packet loads (LD_ABS/LD_IND): keeps the
// first 64 bytes of UDP packets and drops the rest.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");

SEC("socket")
int keep_udp(struct __sk_buff *skb)
{
	/* Socket filters see the packet from the IP header. */
	__u64 proto = load_byte(skb, offsetof(struct iphdr, protocol));
	__u64 ihl = load_byte(skb, 0) & 0x0f;
	__u64 dport = load_half(skb, ihl * 4 + 2);

	if (proto != IPPROTO_UDP || dport == 9)
		return 0;
	return skb->len < 64 ? skb->len : 64;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
