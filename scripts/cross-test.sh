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

# target, then the emulator command (the same as the runner in .cargo/config.toml)
# through which the tests start this test binary again as a child process.
targets=(
  "aarch64-unknown-linux-gnu|qemu-aarch64 -L /usr/aarch64-linux-gnu"
  "armv7-unknown-linux-gnueabihf|qemu-arm -L /usr/arm-linux-gnueabihf"
)

for entry in "${targets[@]}"; do
  target="${entry%%|*}"
  runner="${entry#*|}"
  echo "== cargo test --target $target (features: $features), under $runner"
  PMR_TEST_RUNNER="$runner" cargo test --target "$target" --features "$features"
done
