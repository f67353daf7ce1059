//! The kernel's BPF helper functions: ids and names.
//!
//! The id of a helper is its index in the `__BPF_FUNC_MAPPER` list of
//! `include/uapi/linux/bpf.h` (`BPF_FUNC_map_lookup_elem` is 1, ...). The
//! table below was generated from the Linux 6.1 uapi header (ids 0 to 209,
//! `unspec` to `user_ringbuf_drain`) with the two helpers Linux 6.2 added
//! (210 `cgrp_storage_get`, 211 `cgrp_storage_delete`); do not edit it by
//! hand, regenerate it from a newer header instead.

/// Declares [`HELPER_NAMES`] and the private table of full (`bpf_`-prefixed)
/// names from one list, so the two cannot disagree.
macro_rules! helper_tables {
    ($($name:literal),* $(,)?) => {
        /// The helper names without the `bpf_` prefix, indexed by helper id
        /// (`HELPER_NAMES[1] == "map_lookup_elem"`). Entry 0 is `unspec`,
        /// which is not a callable helper.
        pub const HELPER_NAMES: [&str; 212] = [$($name),*];

        /// The same names with the `bpf_` prefix.
        static FULL_NAMES: [&str; 212] = [$(concat!("bpf_", $name)),*];
    };
}

helper_tables! {
    "unspec", // 0
    "map_lookup_elem", // 1
    "map_update_elem", // 2
    "map_delete_elem", // 3
    "probe_read", // 4
    "ktime_get_ns", // 5
    "trace_printk", // 6
    "get_prandom_u32", // 7
    "get_smp_processor_id", // 8
    "skb_store_bytes", // 9
    "l3_csum_replace", // 10
    "l4_csum_replace", // 11
    "tail_call", // 12
    "clone_redirect", // 13
    "get_current_pid_tgid", // 14
    "get_current_uid_gid", // 15
    "get_current_comm", // 16
    "get_cgroup_classid", // 17
    "skb_vlan_push", // 18
    "skb_vlan_pop", // 19
    "skb_get_tunnel_key", // 20
    "skb_set_tunnel_key", // 21
    "perf_event_read", // 22
    "redirect", // 23
    "get_route_realm", // 24
    "perf_event_output", // 25
    "skb_load_bytes", // 26
    "get_stackid", // 27
    "csum_diff", // 28
    "skb_get_tunnel_opt", // 29
    "skb_set_tunnel_opt", // 30
    "skb_change_proto", // 31
    "skb_change_type", // 32
    "skb_under_cgroup", // 33
    "get_hash_recalc", // 34
    "get_current_task", // 35
    "probe_write_user", // 36
    "current_task_under_cgroup", // 37
    "skb_change_tail", // 38
    "skb_pull_data", // 39
    "csum_update", // 40
    "set_hash_invalid", // 41
    "get_numa_node_id", // 42
    "skb_change_head", // 43
    "xdp_adjust_head", // 44
    "probe_read_str", // 45
    "get_socket_cookie", // 46
    "get_socket_uid", // 47
    "set_hash", // 48
    "setsockopt", // 49
    "skb_adjust_room", // 50
    "redirect_map", // 51
    "sk_redirect_map", // 52
    "sock_map_update", // 53
    "xdp_adjust_meta", // 54
    "perf_event_read_value", // 55
    "perf_prog_read_value", // 56
    "getsockopt", // 57
    "override_return", // 58
    "sock_ops_cb_flags_set", // 59
    "msg_redirect_map", // 60
    "msg_apply_bytes", // 61
    "msg_cork_bytes", // 62
    "msg_pull_data", // 63
    "bind", // 64
    "xdp_adjust_tail", // 65
    "skb_get_xfrm_state", // 66
    "get_stack", // 67
    "skb_load_bytes_relative", // 68
    "fib_lookup", // 69
    "sock_hash_update", // 70
    "msg_redirect_hash", // 71
    "sk_redirect_hash", // 72
    "lwt_push_encap", // 73
    "lwt_seg6_store_bytes", // 74
    "lwt_seg6_adjust_srh", // 75
    "lwt_seg6_action", // 76
    "rc_repeat", // 77
    "rc_keydown", // 78
    "skb_cgroup_id", // 79
    "get_current_cgroup_id", // 80
    "get_local_storage", // 81
    "sk_select_reuseport", // 82
    "skb_ancestor_cgroup_id", // 83
    "sk_lookup_tcp", // 84
    "sk_lookup_udp", // 85
    "sk_release", // 86
    "map_push_elem", // 87
    "map_pop_elem", // 88
    "map_peek_elem", // 89
    "msg_push_data", // 90
    "msg_pop_data", // 91
    "rc_pointer_rel", // 92
    "spin_lock", // 93
    "spin_unlock", // 94
    "sk_fullsock", // 95
    "tcp_sock", // 96
    "skb_ecn_set_ce", // 97
    "get_listener_sock", // 98
    "skc_lookup_tcp", // 99
    "tcp_check_syncookie", // 100
    "sysctl_get_name", // 101
    "sysctl_get_current_value", // 102
    "sysctl_get_new_value", // 103
    "sysctl_set_new_value", // 104
    "strtol", // 105
    "strtoul", // 106
    "sk_storage_get", // 107
    "sk_storage_delete", // 108
    "send_signal", // 109
    "tcp_gen_syncookie", // 110
    "skb_output", // 111
    "probe_read_user", // 112
    "probe_read_kernel", // 113
    "probe_read_user_str", // 114
    "probe_read_kernel_str", // 115
    "tcp_send_ack", // 116
    "send_signal_thread", // 117
    "jiffies64", // 118
    "read_branch_records", // 119
    "get_ns_current_pid_tgid", // 120
    "xdp_output", // 121
    "get_netns_cookie", // 122
    "get_current_ancestor_cgroup_id", // 123
    "sk_assign", // 124
    "ktime_get_boot_ns", // 125
    "seq_printf", // 126
    "seq_write", // 127
    "sk_cgroup_id", // 128
    "sk_ancestor_cgroup_id", // 129
    "ringbuf_output", // 130
    "ringbuf_reserve", // 131
    "ringbuf_submit", // 132
    "ringbuf_discard", // 133
    "ringbuf_query", // 134
    "csum_level", // 135
    "skc_to_tcp6_sock", // 136
    "skc_to_tcp_sock", // 137
    "skc_to_tcp_timewait_sock", // 138
    "skc_to_tcp_request_sock", // 139
    "skc_to_udp6_sock", // 140
    "get_task_stack", // 141
    "load_hdr_opt", // 142
    "store_hdr_opt", // 143
    "reserve_hdr_opt", // 144
    "inode_storage_get", // 145
    "inode_storage_delete", // 146
    "d_path", // 147
    "copy_from_user", // 148
    "snprintf_btf", // 149
    "seq_printf_btf", // 150
    "skb_cgroup_classid", // 151
    "redirect_neigh", // 152
    "per_cpu_ptr", // 153
    "this_cpu_ptr", // 154
    "redirect_peer", // 155
    "task_storage_get", // 156
    "task_storage_delete", // 157
    "get_current_task_btf", // 158
    "bprm_opts_set", // 159
    "ktime_get_coarse_ns", // 160
    "ima_inode_hash", // 161
    "sock_from_file", // 162
    "check_mtu", // 163
    "for_each_map_elem", // 164
    "snprintf", // 165
    "sys_bpf", // 166
    "btf_find_by_name_kind", // 167
    "sys_close", // 168
    "timer_init", // 169
    "timer_set_callback", // 170
    "timer_start", // 171
    "timer_cancel", // 172
    "get_func_ip", // 173
    "get_attach_cookie", // 174
    "task_pt_regs", // 175
    "get_branch_snapshot", // 176
    "trace_vprintk", // 177
    "skc_to_unix_sock", // 178
    "kallsyms_lookup_name", // 179
    "find_vma", // 180
    "loop", // 181
    "strncmp", // 182
    "get_func_arg", // 183
    "get_func_ret", // 184
    "get_func_arg_cnt", // 185
    "get_retval", // 186
    "set_retval", // 187
    "xdp_get_buff_len", // 188
    "xdp_load_bytes", // 189
    "xdp_store_bytes", // 190
    "copy_from_user_task", // 191
    "skb_set_tstamp", // 192
    "ima_file_hash", // 193
    "kptr_xchg", // 194
    "map_lookup_percpu_elem", // 195
    "skc_to_mptcp_sock", // 196
    "dynptr_from_mem", // 197
    "ringbuf_reserve_dynptr", // 198
    "ringbuf_submit_dynptr", // 199
    "ringbuf_discard_dynptr", // 200
    "dynptr_read", // 201
    "dynptr_write", // 202
    "dynptr_data", // 203
    "tcp_raw_gen_syncookie_ipv4", // 204
    "tcp_raw_gen_syncookie_ipv6", // 205
    "tcp_raw_check_syncookie_ipv4", // 206
    "tcp_raw_check_syncookie_ipv6", // 207
    "ktime_get_tai_ns", // 208
    "user_ringbuf_drain", // 209
    "cgrp_storage_get", // 210
    "cgrp_storage_delete", // 211
}

/// The full name (`"bpf_map_lookup_elem"`) of the helper with this id, or
/// `None` for id 0 (`unspec`), negative ids and ids this table does not know.
pub fn helper_name(id: i32) -> Option<&'static str> {
    let index = usize::try_from(id).ok()?;
    if index == 0 {
        return None;
    }
    FULL_NAMES.get(index).copied()
}

/// The id of a helper named `bpf_map_lookup_elem` or `map_lookup_elem`.
/// `unspec` is not a helper and gives `None`.
pub fn helper_id(name: &str) -> Option<i32> {
    let short = name.strip_prefix("bpf_").unwrap_or(name);
    let index = HELPER_NAMES
        .iter()
        .skip(1)
        .position(|&n| n == short)?
        .checked_add(1)?;
    i32::try_from(index).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_ids() {
        assert_eq!(helper_name(1), Some("bpf_map_lookup_elem"));
        assert_eq!(helper_name(5), Some("bpf_ktime_get_ns"));
        assert_eq!(helper_name(12), Some("bpf_tail_call"));
        assert_eq!(helper_name(130), Some("bpf_ringbuf_output"));
        assert_eq!(helper_name(181), Some("bpf_loop"));
        assert_eq!(helper_name(209), Some("bpf_user_ringbuf_drain"));
        assert_eq!(helper_name(210), Some("bpf_cgrp_storage_get"));
        assert_eq!(helper_name(211), Some("bpf_cgrp_storage_delete"));
        assert_eq!(HELPER_NAMES[1], "map_lookup_elem");
        assert_eq!(HELPER_NAMES[0], "unspec");
    }

    #[test]
    fn unknown_ids() {
        assert_eq!(helper_name(0), None);
        assert_eq!(helper_name(-1), None);
        assert_eq!(helper_name(212), None);
        assert_eq!(helper_name(i32::MAX), None);
        assert_eq!(helper_name(i32::MIN), None);
    }

    #[test]
    fn lookup_by_name_with_or_without_prefix() {
        assert_eq!(helper_id("bpf_map_lookup_elem"), Some(1));
        assert_eq!(helper_id("map_lookup_elem"), Some(1));
        assert_eq!(helper_id("bpf_tail_call"), Some(12));
        assert_eq!(helper_id("cgrp_storage_delete"), Some(211));
        assert_eq!(helper_id("unspec"), None);
        assert_eq!(helper_id("bpf_unspec"), None);
        assert_eq!(helper_id("no_such_helper"), None);
        assert_eq!(helper_id(""), None);
        assert_eq!(helper_id("bpf_"), None);
    }

    #[test]
    fn round_trip_for_all_ids() {
        for id in 1..212 {
            let name = helper_name(id).expect("known id");
            assert_eq!(name.strip_prefix("bpf_"), Some(HELPER_NAMES[id as usize]));
            assert_eq!(helper_id(name), Some(id), "{name}");
            assert_eq!(helper_id(HELPER_NAMES[id as usize]), Some(id), "{name}");
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names = HELPER_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), HELPER_NAMES.len());
    }
}
