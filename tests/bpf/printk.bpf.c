// SPDX-License-Identifier: GPL-2.0 OR MIT
// Probe reads of the process's memory, trace_printk and snprintf.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u64 name_ptr;   /* a NUL-terminated string in the process */
	__u64 bad_ptr;    /* an unmapped address */
	__s64 read_ret;   /* out: bpf_probe_read_user on bad_ptr */
	__s64 str_len;    /* out: bpf_probe_read_user_str on name_ptr */
	char out[32];     /* out: bpf_snprintf result */
};

SEC("syscall")
int probes(struct args *ctx)
{
	char name[16] = {};
	__u64 word = 0;
	__u64 data[2];

	ctx->read_ret = bpf_probe_read_user(&word, sizeof(word), (void *)ctx->bad_ptr);
	ctx->str_len = bpf_probe_read_user_str(name, sizeof(name), (void *)ctx->name_ptr);
	bpf_printk("hello %s, %d bytes", name, (int)ctx->str_len);
	data[0] = (__u64)(long)name;
	data[1] = 42;
	return bpf_snprintf(ctx->out, sizeof(ctx->out), "%s=%d", data, sizeof(data));
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
