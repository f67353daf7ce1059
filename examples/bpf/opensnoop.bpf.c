// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * opensnoop, in the style of libbpf-tools: the sys_enter_openat
 * tracepoint remembers the file name per thread, sys_exit_openat sends
 * {pid, result, file name} through a ring buffer. With userbpf the
 * tracepoints are in-process syscall hooks of the traced command: libc's
 * openat and inline `syscall` instructions alike.
 *
 *   userbpf exec examples/bpf/opensnoop.bpf.o --json -- userbpf-demo
 *
 * Each record: u32 pid, s32 result (fd or -errno), char name[64].
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define NAME_LEN 64

struct event {
	__u32 pid;
	__s32 ret;
	char name[NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	__u64 name = ctx->args[1];

	bpf_map_update_elem(&names, &tid, &name, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	__u64 *name = bpf_map_lookup_elem(&names, &tid);
	struct event *e;

	if (!name)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->pid = id >> 32;
		e->ret = ctx->ret;
		bpf_probe_read_user_str(e->name, sizeof(e->name), (const char *)*name);
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&names, &tid);
	return 0;
}
