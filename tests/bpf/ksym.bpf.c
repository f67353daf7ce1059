// SPDX-License-Identifier: GPL-2.0 OR MIT
// A __ksym extern (a kernel variable): loads in the kernel, is refused in
// user space with an error naming it.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern const int bpf_prog_active __ksym;

SEC("syscall")
int read_ksym(void *ctx)
{
	long p = (long)&bpf_prog_active;

	asm volatile("" : "+r"(p));
	return p != 0;
}

char LICENSE[] SEC("license") = "GPL";
