#!/usr/bin/env bash
# Cargo's runner for the ARM targets (.cargo/config.toml):
#   qemu-run.sh QEMU -L SYSROOT BINARY [ARGS...]
# runs BINARY under qemu-user with the target's Debian sysroot, or directly on
# a machine of that architecture (building natively on the board itself).
# It also exports PMR_TEST_RUNNER, through which the tests that start their own
# binary again as a child run that child under the same emulator.
set -euo pipefail

qemu="$1"
shift
emulator=("$qemu")
if [ "${1:-}" = "-L" ]; then
  emulator+=(-L "$2")
  shift 2
fi

case "$qemu:$(uname -m)" in
  qemu-aarch64:aarch64 | qemu-arm:armv7l | qemu-arm:armv8l) exec "$@" ;;
esac

if ! command -v "$qemu" >/dev/null 2>&1; then
  echo "qemu-run.sh: $qemu is not installed (apt-get install qemu-user; scripts/install-cross-deps.sh does)" >&2
  exit 127
fi
export PMR_TEST_RUNNER="${emulator[*]}"
exec "${emulator[@]}" "$@"
