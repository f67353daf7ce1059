// SPDX-License-Identifier: GPL-2.0 OR MIT
// __kconfig externs, resolved by the loader from the kernel configuration.
// Runs as a `syscall` program; copies each extern into the context.
#include <linux/types.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>

extern __u32 LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern bool CONFIG_BPF_SYSCALL __kconfig;
extern int CONFIG_HZ __kconfig;
extern enum libbpf_tristate CONFIG_USERBPF_TEST_TRISTATE __kconfig __weak;
extern char CONFIG_USERBPF_TEST_CHAR __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[16] __kconfig __weak;
extern __s64 CONFIG_USERBPF_TEST_MISSING __kconfig __weak;

struct out {
	__u32 version;
	__u32 cookie;
	__u32 bpf_syscall;
	__s32 hz;
	__u32 tristate;
	__u32 chr;
	__s64 missing;
	char hostname[16];
};

SEC("syscall")
int kconfig(struct out *o)
{
	o->version = LINUX_KERNEL_VERSION;
	o->cookie = LINUX_HAS_BPF_COOKIE;
	o->bpf_syscall = CONFIG_BPF_SYSCALL;
	o->hz = CONFIG_HZ;
	o->tristate = CONFIG_USERBPF_TEST_TRISTATE;
	o->chr = CONFIG_USERBPF_TEST_CHAR;
	o->missing = CONFIG_USERBPF_TEST_MISSING;
	__builtin_memcpy(o->hostname, CONFIG_DEFAULT_HOSTNAME, 16);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
