#!/usr/bin/env bash
# Builds the BPF fixtures: every tests/bpf/*.bpf.c -> OUT_DIR/*.bpf.o
# (default: next to the sources, where the committed objects live).
# Needs Debian's clang-19, libbpf-dev and bpftool: the CO-RE fixtures
# include a vmlinux.h generated here from the kernel's BTF (VMLINUX_BTF,
# default /sys/kernel/btf/vmlinux) into a temporary directory; it is never
# committed.
set -euo pipefail
# SRC_DIR: another directory of sources (examples/bpf/build.sh uses it).
src_dir="$(cd "${SRC_DIR:-$(dirname "$0")}" && pwd)"
out_dir="${1:-$src_dir}"
mkdir -p "$out_dir"
clang="${CLANG:-clang-19}"
bpftool="${BPFTOOL:-bpftool}"
vmlinux_btf="${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}"
vmlinux_dir="$(mktemp -d)"
trap 'rm -rf "$vmlinux_dir"' EXIT
"$bpftool" btf dump file "$vmlinux_btf" format c >"$vmlinux_dir/vmlinux.h"
for c in "$src_dir"/*.bpf.c; do
	o="$out_dir/$(basename "${c%.c}").o"
	"$clang" -O2 -g -target bpf -D__TARGET_ARCH_x86 \
		-fdebug-prefix-map="$src_dir"=. -fdebug-prefix-map="$vmlinux_dir"=vmlinux \
		-fdebug-compilation-dir=. \
		-I "$src_dir" -I "$(dirname "$0")" -I "$vmlinux_dir" -I /usr/include/x86_64-linux-gnu -c "$c" -o "$o"
	echo "built $o"
done
