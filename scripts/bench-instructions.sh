#!/usr/bin/env bash
# The client's instructions per sequential QoS 1 publish, counted by
# callgrind (valgrind): a count, not a time, so it repeats on a noisy machine
# (two runs of one binary differed by 0.2%) where msgs/s varies by ±12%.
#
#   scripts/bench-instructions.sh [REV]
#
# Runs tools/publish_bench.rs under callgrind, VARIANTS (default `none
# redis-unix`) in sequential mode, N messages (default 2000), for this tree
# and, given REV, for that commit too, against one redis-server and mosquitto.
# Prints each total and, per variant, the instructions per message above
# `none`. Only user-space instructions of the client count: not the kernel's
# (socket writes, wake-ups), not Redis's. One caveat when reading the
# profiles (callgrind.*.out in $KEEP, if set): valgrind counts each
# iteration of a `rep stosb` memset as an instruction, so the up to 8 KiB
# that redis-rs's parser (combine's buffer) zeroes before each read counts
# about 5,000 instructions per reply, which overstates what it costs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: apt-get install valgrind)" >&2; exit 1; }
rev="${1:-}"
read -r -a variants <<<"${VARIANTS:-none redis-unix}"
N="${N:-2000}"
make_work_dir instructions

target="${CARGO_TARGET_DIR:-$PWD/target}"
builds=(this)
CARGO_TARGET_DIR="$target/instructions-this" cargo build -q --release --features unix-socket --example publish_bench
bench_this="$target/instructions-this/release/examples/publish_bench"
if [ -n "$rev" ]; then
  build_bench_at "$rev" "$target/instructions-rev"
  bench_rev="$target/instructions-rev/release/examples/publish_bench"
  builds+=(rev)
fi

mqtt_port="$(free_port)"
start_mosquitto "$mqtt_port" "${bench_mosquitto_options[@]}"
export MQTT_URI="tcp://127.0.0.1:$mqtt_port"
start_bench_redis

declare -A total
for build in "${builds[@]}"; do
  bench="$bench_this"; [ "$build" = rev ] && bench="$bench_rev"
  for variant in "${variants[@]}"; do
    out="$work/callgrind.$build.$variant.out"
    CLIENT_ID="instructions-$build-$variant-$$" valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$bench" "$variant" sequential "$N" > "$work/$build.$variant.log" 2> "$work/$build.$variant.err"
    grep -q '^RESULT ' "$work/$build.$variant.log" || { cat "$work/$build.$variant.err" >&2; exit 1; }
    total[$build.$variant]="$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$work/$build.$variant.err")"
    if [ -n "${KEEP:-}" ]; then cp "$out" "$KEEP/"; fi
  done
done

label() { if [ "$1" = rev ]; then git rev-parse --short "$rev"; else echo "this tree ($(git rev-parse --short HEAD))"; fi; }
echo "== client instructions, $N sequential QoS 1 publishes (callgrind)"
echo "| build | variant | instructions | per message above none |"
echo "|---|---|---:|---:|"
for build in "${builds[@]}"; do
  for variant in "${variants[@]}"; do
    t="${total[$build.$variant]}" extra="-"
    if [ -n "${total[$build.none]:-}" ] && [ "$variant" != none ]; then
      extra="$(( (t - ${total[$build.none]}) / N ))"
    fi
    echo "| $(label "$build") | $variant | $t | $extra |"
  done
done
