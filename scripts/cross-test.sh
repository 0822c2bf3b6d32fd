#!/usr/bin/env bash
# Cross-builds for aarch64 and armv7 Linux with Debian's toolchains (linker,
# runner and C compilers are in .cargo/config.toml) and runs the whole test
# suite for each under qemu-user, against redis-server and mosquitto on this
# machine. scripts/test.sh runs this at its end unless PMR_SKIP_CROSS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/install-cross-deps.sh

# The features a device build uses; `tls` and `ssl` would need the target's
# OpenSSL (see the README's "Cross-compiling").
features="unix-socket"

# The runner in .cargo/config.toml (scripts/qemu-run.sh) starts each test
# binary under qemu-user and tells the tests how to start children the same way.
# One test at a time: with several tests' Paho clients and server spawns in one
# emulated process, qemu-aarch64 crashed the test binary with SIGSEGV in about
# 1 of 60 runs of tests/command_counts.rs (never natively, and 0 of 40 runs
# one test at a time). The native suite keeps running tests in parallel.
for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  echo "== cargo test --target $target (features: $features), under qemu-user, one test at a time"
  cargo test --target "$target" --features "$features" -- --test-threads=1
  # CI=true: a clean clone, whose build of this target nothing reuses; the
  # disk may be small (see scripts/test.sh).
  if [ "${CI:-}" = true ]; then rm -rf "${CARGO_TARGET_DIR:-target}/$target"; fi
done
