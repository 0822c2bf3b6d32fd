#!/usr/bin/env bash
# The project's test command: install what is missing, then format check,
# clippy with warnings denied, and every test against a real redis-server and
# mosquitto (the tests start their own, on free ports of 127.0.0.1), then the
# same tests cross-built for aarch64 and armv7 and run under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

# Every feature but `vendored-ssl`, which only builds OpenSSL from source;
# `cli` adds the paho-mqtt-redis command and its tests (tests/cli.rs).
features="unix-socket tls ssl cli"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (features: $features)"
cargo clippy --all-targets --features "$features" -- -D warnings
echo "== cargo test (features: $features)"
cargo test --features "$features"
echo "== cargo test, default features (URL schemes whose feature is off)"
cargo test --test config

# The same suite for aarch64 and armv7 under qemu-user (see the README's
# "Cross-compiling"); PMR_SKIP_CROSS=1 leaves it out of a quick local run.
if [ "${PMR_SKIP_CROSS:-0}" = 1 ]; then
  echo "== cross tests skipped (PMR_SKIP_CROSS=1)"
else
  bash scripts/cross-test.sh
fi
