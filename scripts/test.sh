#!/usr/bin/env bash
# The project's test command: install what is missing, then format check,
# clippy with warnings denied, and every test against a real redis-server and
# mosquitto (the tests start their own, on free ports of 127.0.0.1).
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
