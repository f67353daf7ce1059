// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * CO-RE relocations. Built against the kernel's vmlinux.h, which
 * build.sh generates with bpftool (it is not committed). The tests run
 * these uprobe programs on a struct pt_regs image and check r0 against
 * offsets they know independently.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* A local flavor of struct pt_regs: some of its fields, in another order,
 * and one no kernel has. */
struct pt_regs___mine {
	unsigned long ip;
	unsigned long si;
	unsigned long userbpf_no_such_field;
	unsigned long di;
} __attribute__((preserve_access_index));

/* A type no kernel has. */
struct userbpf_no_such_type {
	int x;
} __attribute__((preserve_access_index));

/* struct trace_entry with pid as a bitfield: the kernel's is a plain int. */
struct trace_entry___bits {
	unsigned short type;
	int pid : 20;
} __attribute__((preserve_access_index));

/* struct trace_entry reduced to its int member, for bpf_core_type_matches(). */
struct trace_entry___pid {
	int pid;
} __attribute__((preserve_access_index));

/* A flavor of a kernel enum whose local value is wrong on purpose. */
enum bpf_func_id___mine { BPF_FUNC_probe_read_kernel___mine = 1 };

/* A .text subprogram, linked into each program that calls it. */
static __attribute__((noinline)) __u64 second_arg(struct pt_regs___mine *r)
{
	return r->si;
}

SEC("uprobe")
__u64 parm1(struct pt_regs *ctx)
{
	return PT_REGS_PARM1(ctx);
}

SEC("uprobe")
__u64 core_read(struct pt_regs *ctx)
{
	return BPF_CORE_READ(ctx, si);
}

SEC("uprobe")
__u64 flavor(struct pt_regs *ctx)
{
	struct pt_regs___mine *r = (void *)ctx;

	return r->ip ^ (r->di << 1) ^ (second_arg(r) << 2);
}

SEC("uprobe")
__u64 subprog(struct pt_regs *ctx)
{
	return second_arg((void *)ctx);
}

SEC("uprobe")
__u64 exists(struct pt_regs *ctx)
{
	struct pt_regs___mine *r = (void *)ctx;
	__u64 bits = 0;

	bits |= (__u64)bpf_core_field_exists(r->di) << 0;
	bits |= (__u64)bpf_core_field_exists(r->userbpf_no_such_field) << 1;
	bits |= (__u64)bpf_core_type_exists(struct pt_regs) << 2;
	bits |= (__u64)bpf_core_type_exists(struct userbpf_no_such_type) << 3;
	bits |= (__u64)bpf_core_type_matches(struct trace_entry) << 4;
	bits |= (__u64)bpf_core_type_matches(struct pt_regs___mine) << 5;
	bits |= (__u64)bpf_core_enum_value_exists(enum bpf_func_id___mine,
						  BPF_FUNC_probe_read_kernel___mine) << 6;
	bits |= (__u64)bpf_core_type_matches(struct trace_entry___pid) << 7;
	bits |= (__u64)bpf_core_field_size(r->di) << 8;
	bits |= (__u64)bpf_core_type_size(struct trace_entry) << 16;
	bits |= (__u64)__builtin_preserve_field_info(((struct trace_entry *)0)->pid,
						     BPF_FIELD_SIGNED) << 24;
	bits |= (__u64)__builtin_preserve_field_info(((struct trace_entry *)0)->type,
						     BPF_FIELD_SIGNED) << 25;
	bits |= (__u64)(bpf_core_type_id_kernel(struct pt_regs) != 0) << 26;
	bits |= (__u64)bpf_core_field_offset(r->di) << 32;
	return bits;
}

SEC("uprobe")
__u64 guarded(struct pt_regs *ctx)
{
	struct pt_regs___mine *r = (void *)ctx;

	if (bpf_core_field_exists(r->userbpf_no_such_field))
		return r->userbpf_no_such_field;
	return 7;
}

SEC("uprobe")
__u64 unguarded(struct pt_regs *ctx)
{
	struct pt_regs___mine *r = (void *)ctx;

	return r->userbpf_no_such_field;
}

SEC("uprobe")
__u64 bitfield(struct pt_regs *ctx)
{
	struct trace_entry___bits *e = (void *)ctx;

	return BPF_CORE_READ_BITFIELD(e, pid);
}

SEC("uprobe")
__u64 enumval(struct pt_regs *ctx)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id___mine,
				       BPF_FUNC_probe_read_kernel___mine))
		return bpf_core_enum_value(enum bpf_func_id___mine,
					   BPF_FUNC_probe_read_kernel___mine);
	return 0xffff;
}
