// SPDX-License-Identifier: GPL-2.0 OR MIT
// Global (non-static) functions, which the kernel verifies on their own
// for any arguments their BTF prototypes allow, and whose callers get an
// unknown scalar back. Socket filters; kernel-backend and the verifier's
// tests compare both verifiers' verdicts on each program.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define __arg_ctx __attribute__((btf_decl_tag("arg:ctx")))
#define __arg_nonnull __attribute__((btf_decl_tag("arg:nonnull")))

/* A pointer argument may be NULL: checked first. */
__noinline int read_checked(int *p)
{
	if (!p)
		return 0;
	return *p + 1;
}

SEC("socket")
int checked_param(struct __sk_buff *skb)
{
	int x = skb->len;

	return read_checked(&x);
}

/* Safe for this caller, not for any argument: rejected. */
__noinline int read_unchecked(int *p)
{
	return *p + 1;
}

SEC("socket")
int unchecked_param(struct __sk_buff *skb)
{
	int x = skb->len;

	return read_unchecked(&x);
}

/* A pointer to the program's context type is the context. */
__noinline int packet_len(struct __sk_buff *skb)
{
	return skb->len;
}

SEC("socket")
int ctx_param(struct __sk_buff *skb)
{
	return packet_len(skb) + 1;
}

/* An out parameter: the function writes it, the caller reads it. */
__noinline int fill(__u64 *out)
{
	if (!out)
		return -1;
	*out = 42;
	return 0;
}

SEC("socket")
int out_param(struct __sk_buff *skb)
{
	__u64 v;

	if (fill(&v))
		return 0;
	return v;
}

/* The caller cannot rely on the range of what a global function returns:
 * an index below 8 here is an unknown scalar to the caller. */
__noinline int small_index(__u32 x)
{
	return x & 7;
}

SEC("socket")
int returned_range(struct __sk_buff *skb)
{
	volatile __u64 table[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

	return table[small_index(skb->len)];
}

/* Global functions must return a scalar. */
__noinline void store(int *p)
{
	if (p)
		*p = 1;
}

SEC("socket")
int void_global(struct __sk_buff *skb)
{
	int x = 0;

	store(&x);
	return x;
}

/* The context is no `int *`. */
SEC("socket")
int ctx_as_memory(struct __sk_buff *skb)
{
	return read_checked((int *)skb);
}

/* `void *` tagged arg:ctx is the context. */
__noinline int tagged_len(void *ctx __arg_ctx)
{
	struct __sk_buff *skb = ctx;

	return skb->len;
}

SEC("socket")
int tagged_ctx(struct __sk_buff *skb)
{
	return tagged_len(skb);
}

/* arg:nonnull: no NULL check needed. */
__noinline int read_nonnull(int *p __arg_nonnull)
{
	return *p;
}

SEC("socket")
int nonnull_param(struct __sk_buff *skb)
{
	int x = skb->len;

	return read_nonnull(&x);
}

/* A pointer where a number is expected. */
__noinline int low_bit(long v)
{
	return v & 1;
}

SEC("socket")
int pointer_as_scalar(struct __sk_buff *skb)
{
	return low_bit((long)skb);
}

/* The function may read and write all of its structure: 16 bytes from an
 * 8-byte stack slot at the frame's top leave the frame. */
struct pair {
	__u64 a, b;
};

__noinline int sum_pair(struct pair *p)
{
	if (!p)
		return 0;
	return p->a + p->b;
}

SEC("socket")
int short_object(struct __sk_buff *skb)
{
	__u64 v = skb->len;

	return sum_pair((struct pair *)&v);
}

/* A packet pointer is memory of the pointee's size. */
__noinline int first_byte(__u8 *p)
{
	if (!p)
		return 0;
	return *p;
}

SEC("tc")
int packet_param(struct __sk_buff *skb)
{
	__u8 *data = (void *)(long)skb->data;
	__u8 *end = (void *)(long)skb->data_end;

	if (data + 1 > end)
		return 0;
	return first_byte(data);
}

/* A function that may change the packet (bpf_skb_pull_data) on some
 * path: after any call of it, the caller's packet pointers are stale,
 * even where this call does not take that path. */
__noinline int maybe_pull(struct __sk_buff *skb, int pull)
{
	if (pull)
		return bpf_skb_pull_data(skb, 0);
	return 0;
}

SEC("tc")
int stale_packet(struct __sk_buff *skb)
{
	__u8 *data = (void *)(long)skb->data;
	__u8 *end = (void *)(long)skb->data_end;

	if (data + 1 > end)
		return 0;
	maybe_pull(skb, 0);
	return *data;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
