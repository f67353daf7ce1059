// SPDX-License-Identifier: GPL-2.0 OR MIT
// Helpers that ask about the event: function ip, attach cookie, user stacks
// (bpf_get_stack, bpf_get_stackid with a stack trace map), function
// arguments and return value, bpf_override_return, signals, jiffies.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pt_regs;

#define DEPTH 8

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 64);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct probe_result {
	__u64 ip;
	__u64 cookie;
	__s64 user_bytes;
	__u64 user[4];
	__s64 kernel_bytes;
	__s64 bad_size;
	__s64 stackid;
	__s64 stackid_again;
	__s64 stackid_skip2;
	__s64 override;
};

struct probe_result probe_res;

SEC("uprobe")
int probe(struct pt_regs *ctx)
{
	__u64 kbuf[2];

	probe_res.ip = bpf_get_func_ip(ctx);
	probe_res.cookie = bpf_get_attach_cookie(ctx);
	probe_res.user_bytes = bpf_get_stack(ctx, probe_res.user, sizeof(probe_res.user), BPF_F_USER_STACK);
	probe_res.kernel_bytes = bpf_get_stack(ctx, kbuf, sizeof(kbuf), 0);
	probe_res.bad_size = bpf_get_stack(ctx, kbuf, 12, BPF_F_USER_STACK);
	probe_res.stackid = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	probe_res.stackid_again = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	probe_res.stackid_skip2 = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK | 2);
	probe_res.override = bpf_override_return(ctx, 42);
	return 0;
}

struct fexit_result {
	__u64 count;
	__u64 arg1;
	__s64 arg1_rc;
	__s64 arg9_rc;
	__u64 ret;
	__s64 ret_rc;
};

struct fexit_result fexit_res;

SEC("fexit/userbpf_demo_add")
int fexit_add(__u64 *ctx)
{
	__u64 v = 0;

	fexit_res.count = bpf_get_func_arg_cnt(ctx);
	fexit_res.arg1_rc = bpf_get_func_arg(ctx, 1, &fexit_res.arg1);
	fexit_res.arg9_rc = bpf_get_func_arg(ctx, 9, &v);
	fexit_res.ret_rc = bpf_get_func_ret(ctx, &fexit_res.ret);
	return 0;
}

struct sys_args {
	__u64 jiffies;
	__s64 signal_rc;
	__u32 sig;
	__u32 thread;
};

SEC("syscall")
int jiffies(struct sys_args *ctx)
{
	ctx->jiffies = bpf_jiffies64();
	return 0;
}

SEC("syscall")
int signal(struct sys_args *ctx)
{
	if (ctx->thread)
		ctx->signal_rc = bpf_send_signal_thread(ctx->sig);
	else
		ctx->signal_rc = bpf_send_signal(ctx->sig);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
