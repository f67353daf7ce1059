// SPDX-License-Identifier: GPL-2.0 OR MIT
// Map definitions of every flavour the loader reads: BTF-defined maps,
// a legacy `maps` definition, and global data (.data, .rodata, .bss).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 pid;
	__u32 cpu;
	__u64 ts;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct event);
} events_by_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128);
	__uint(key_size, 8);
	__uint(value_size, 16);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} lru SEC(".maps");

/* The pre-BTF definition libbpf 0.x read from SEC("maps"). */
struct legacy_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct legacy_map_def legacy_array SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 16,
};

const volatile __u32 targ_pid = 0;
__u64 seen = 7;
__u64 total;

SEC("tp/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 key = 0;
	__u64 *cnt;
	__u64 *legacy;
	struct event *e;

	if (targ_pid && pid != targ_pid)
		return 0;
	cnt = bpf_map_lookup_elem(&counters, &key);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	legacy = bpf_map_lookup_elem(&legacy_array, &key);
	if (legacy)
		*legacy += 1;
	e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
	if (e) {
		e->pid = pid;
		e->cpu = bpf_get_smp_processor_id();
		e->ts = bpf_ktime_get_ns();
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		bpf_map_update_elem(&events_by_pid, &pid, e, BPF_ANY);
		bpf_ringbuf_submit(e, 0);
	}
	seen++;
	total += pid;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
