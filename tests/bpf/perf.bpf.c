// SPDX-License-Identifier: GPL-2.0 OR MIT
// Events through a perf event array, as older libbpf-tools send them.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 seq;
	__u32 pid;
	__u64 value;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

SEC("syscall")
int emit(__u64 *ctx)
{
	__u64 n = ctx[0];

	for (__u32 i = 0; i < n && i < 16; i++) {
		struct event e = {
			.seq = i,
			.pid = bpf_get_current_pid_tgid() >> 32,
			.value = ctx[1] + i,
		};

		if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e)))
			return -1;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
