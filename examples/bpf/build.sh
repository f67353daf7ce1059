#!/usr/bin/env bash
# Builds the examples' BPF programs: examples/bpf/*.bpf.c -> OUT_DIR/*.bpf.o
# (default: next to the sources, where the committed objects live), with
# the same toolchain and flags as the test fixtures (tests/bpf/build.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SRC_DIR="$here" exec "$here/../../tests/bpf/build.sh" "${1:-$here}"
