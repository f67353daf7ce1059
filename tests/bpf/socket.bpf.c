// SPDX-License-Identifier: GPL-2.0 OR MIT
// Socket filters with the legacy packet loads (LD_ABS/LD_IND): keep_udp
// keeps the first 64 bytes of UDP packets and drops the rest; sub_loads
// loads in subprograms, where a load past the packet returns 0 from the
// subprogram (the kernel's gen_ld_abs) and the caller goes on.
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

/* An absolute load (BPF_LD_ABS) past most packets. */
static __noinline int far_byte(struct __sk_buff *skb)
{
	return load_byte(skb, 90) + 1;
}

/* An indirect load (BPF_LD_IND) at an offset the caller gives. */
static __noinline int half_at(struct __sk_buff *skb, __u64 off)
{
	return load_half(skb, off) + 1;
}

SEC("socket")
int sub_loads(struct __sk_buff *skb)
{
	/* Each subprogram gives 0 for a load past the packet, else the
	 * field + 1: the caller's sum tells which loads were inside. */
	int far = far_byte(skb);
	int len = half_at(skb, 2);
	int past = half_at(skb, 1000);

	return far * 100000 + len * 3 + past + 7;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
