// SPDX-License-Identifier: GPL-2.0 OR MIT
// A ring buffer event stream with a struct, in the style of the
// libbpf-tools: reserve/submit, output, discard.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 seq;
	__u32 kind;
	__u64 value;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct args {
	__u32 count;
	__u32 discard_every;
	__u64 base;
};

SEC("syscall")
int emit(struct args *ctx)
{
	__u32 n = ctx->count;
	__u32 sent = 0;

	for (__u32 i = 0; i < n && i < 64; i++) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

		if (!e)
			break;
		e->seq = i;
		e->kind = 1;
		e->value = ctx->base + i;
		if (ctx->discard_every && i % ctx->discard_every == 0) {
			bpf_ringbuf_discard(e, 0);
			continue;
		}
		bpf_ringbuf_submit(e, 0);
		sent++;
	}
	{
		struct event done = { .seq = sent, .kind = 2, .value = ctx->base };

		bpf_ringbuf_output(&events, &done, sizeof(done), 0);
	}
	return sent;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
