#!/usr/bin/env bash
# The figures of the README's "Cross-compiling", per target: the stripped size
# of the release `redis_persist_pub` example, and the resident memory of a
# publisher holding COUNT (10000) QoS 1 messages in flight
# (tools/inflight_memory.rs). x86_64 runs natively, for comparison; aarch64
# and armv7 run under qemu-user, whose own memory is then part of the figures.
#
#   scripts/embedded-figures.sh                  # prints a Markdown table
#   COUNT=1000 PAYLOAD_BYTES=256 scripts/embedded-figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >&2
bash scripts/install-cross-deps.sh >&2

count="${COUNT:-10000}"
# A second, small run: its growth is what does not depend on the number of
# messages (under qemu mostly the emulator translating the publish path).
small=100
payload_bytes="${PAYLOAD_BYTES:-64}"
features="unix-socket"

# target | strip program | command that runs the target's binaries here
targets=(
  "x86_64-unknown-linux-gnu|strip|"
  "aarch64-unknown-linux-gnu|aarch64-linux-gnu-strip|qemu-aarch64 -L /usr/aarch64-linux-gnu"
  "armv7-unknown-linux-gnueabihf|arm-linux-gnueabihf-strip|qemu-arm -L /usr/arm-linux-gnueabihf"
)

work="$(mktemp -d -t pmr-figures-XXXXXX)"
redis_pid=""
cleanup() {
  [ -z "$redis_pid" ] || kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A RAM-only Redis on a Unix socket only (port 0: no TCP), as on a device.
redis_server="$(command -v redis-server || echo /usr/bin/redis-server)"
"$redis_server" --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -s "$work/redis.sock" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis_url="redis+unix://$work/redis.sock"

# Value of "LABEL: VmRSS N kB, VmHWM M kB" lines printed by inflight_memory.
field() { sed -n "s/^$1.*$2 \([0-9]*\) kB.*/\1/p" "$3"; }

echo "| target | \`redis_persist_pub\`, stripped | RSS before publishing | RSS with $count in flight | peak RSS (VmHWM) | growth with $count | growth with $small | per message | the Redis hash |"
echo "|---|---|---|---|---|---|---|---|---|"
for entry in "${targets[@]}"; do
  IFS='|' read -r target strip runner <<<"$entry"
  echo "== $target" >&2
  cargo build --release --target "$target" --features "$features" \
    --example redis_persist_pub --example inflight_memory >&2
  examples="target/$target/release/examples"

  cp "$examples/redis_persist_pub" "$work/redis_persist_pub-$target"
  "$strip" "$work/redis_persist_pub-$target"
  ls -l "$work/redis_persist_pub-$target" >&2
  size=$(stat -c %s "$work/redis_persist_pub-$target")

  # $runner is empty for x86_64, or a command and its options: split on purpose.
  # shellcheck disable=SC2086
  $runner "$examples/inflight_memory" "$redis_url" "$small" "$payload_bytes" | tee "$work/small.txt" >&2
  out="$work/inflight-$target.txt"
  # shellcheck disable=SC2086
  $runner "$examples/inflight_memory" "$redis_url" "$count" "$payload_bytes" | tee "$out" >&2
  rss_before=$(field "before publishing" VmRSS "$out")
  rss_after=$(field "after publishing" VmRSS "$out")
  hwm_after=$(field "after publishing" VmHWM "$out")
  held=$(sed -n 's/^growth while publishing: \([0-9]*\) kB/\1/p' "$out")
  held_small=$(sed -n 's/^growth while publishing: \([0-9]*\) kB/\1/p' "$work/small.txt")
  redis_kb=$(sed -n 's/^Redis holds them in \([0-9]*\) kB.*/\1/p' "$out")
  per_message=$(((held - held_small) * 1024 / (count - small)))
  where="native"
  [ -z "$runner" ] || where="under ${runner%% *}"

  printf '| %s (%s) | %d kB | %s kB | %s kB | %s kB | %s kB | %s kB | %d bytes | %s kB |\n' \
    "$target" "$where" $((size / 1024)) "$rss_before" "$rss_after" "$hwm_after" "$held" "$held_small" \
    "$per_message" "$redis_kb"
done
