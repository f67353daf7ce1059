#!/usr/bin/env bash
# Builds the BPF fixtures: every tests/bpf/*.bpf.c -> OUT_DIR/*.bpf.o
# (default: next to the sources, where the committed objects live).
# Needs Debian's clang-19 and libbpf-dev.
set -euo pipefail
src_dir="$(cd "$(dirname "$0")" && pwd)"
out_dir="${1:-$src_dir}"
mkdir -p "$out_dir"
clang="${CLANG:-clang-19}"
for c in "$src_dir"/*.bpf.c; do
	o="$out_dir/$(basename "${c%.c}").o"
	"$clang" -O2 -g -target bpf -D__TARGET_ARCH_x86 \
		-fdebug-prefix-map="$src_dir"=. -fdebug-compilation-dir=. \
		-I "$src_dir" -I /usr/include/x86_64-linux-gnu -c "$c" -o "$o"
	echo "built $o"
done
