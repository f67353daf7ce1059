// SPDX-License-Identifier: GPL-2.0 OR MIT
// BPF timers: init, set_callback, start (re-armed from the callback),
// cancel, and their error codes.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define CLOCK_MONOTONIC 1

struct elem {
	struct bpf_timer t;
	__u64 fired;
	__u64 key_seen;
	__s64 cancel_self;
	__u64 rearm;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} timers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} htimers SEC(".maps");

__u64 hash_fired;

struct args {
	__u32 key;
	__u32 pad;
	__u64 ns;
	__u64 rearm;
	__s64 init;
	__s64 init_again;
	__s64 start_without_callback;
	__s64 set_callback;
	__s64 start;
	__s64 cancel;
	__s64 bad_clock;
};

static int fire(void *map, __u32 *key, struct elem *e)
{
	e->fired++;
	e->key_seen = *key;
	e->cancel_self = bpf_timer_cancel(&e->t);
	if (e->fired < e->rearm)
		bpf_timer_start(&e->t, 1000000, 0);
	return 0;
}

SEC("syscall")
int arm(struct args *ctx)
{
	__u32 k = ctx->key;
	struct elem *e = bpf_map_lookup_elem(&timers, &k);

	if (!e)
		return -1;
	e->rearm = ctx->rearm;
	ctx->bad_clock = bpf_timer_init(&e->t, &timers, 3);
	ctx->init = bpf_timer_init(&e->t, &timers, CLOCK_MONOTONIC);
	ctx->init_again = bpf_timer_init(&e->t, &timers, CLOCK_MONOTONIC);
	ctx->start_without_callback = bpf_timer_start(&e->t, 1000, 0);
	ctx->set_callback = bpf_timer_set_callback(&e->t, fire);
	ctx->start = bpf_timer_start(&e->t, ctx->ns, 0);
	return 0;
}

SEC("syscall")
int cancel(struct args *ctx)
{
	__u32 k = ctx->key;
	struct elem *e = bpf_map_lookup_elem(&timers, &k);

	if (!e)
		return -1;
	ctx->cancel = bpf_timer_cancel(&e->t);
	return 0;
}

static int hfire(void *map, __u32 *key, struct elem *e)
{
	__sync_fetch_and_add(&hash_fired, 1);
	return 0;
}

/* A timer in a hash map element: deleting the element cancels it. */
SEC("syscall")
int arm_hash(struct args *ctx)
{
	struct elem zero = {};
	__u32 k = ctx->key;
	struct elem *e;

	bpf_map_update_elem(&htimers, &k, &zero, BPF_ANY);
	e = bpf_map_lookup_elem(&htimers, &k);
	if (!e)
		return -1;
	ctx->init = bpf_timer_init(&e->t, &htimers, CLOCK_MONOTONIC);
	ctx->set_callback = bpf_timer_set_callback(&e->t, hfire);
	ctx->start = bpf_timer_start(&e->t, ctx->ns, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
