#!/usr/bin/env bash
# Publish throughput of this tree against an earlier commit, measured in one
# run: the two publish_bench binaries alternate on the same redis-server and
# mosquitto, so a noisy machine affects both alike.
#
#   scripts/bench-compare.sh REV [VARIANT ...]     (default variants: redis-unix redis-tcp)
#
# ROUNDS (default 7) rounds; in each, every variant runs once with each binary,
# in window mode (COUNT messages, default 5000) and sequential mode (COUNT_SEQ,
# default 2000). Prints the median msgs/s per binary and the ratio this/REV,
# and appends every run to benchmarks/compare-runs.csv.
set -euo pipefail
cd "$(dirname "$0")/.."

rev="${1:?usage: scripts/bench-compare.sh REV [VARIANT ...]}"
shift
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(redis-unix redis-tcp)
ROUNDS="${ROUNDS:-7}" COUNT="${COUNT:-5000}" COUNT_SEQ="${COUNT_SEQ:-2000}"

source scripts/lib.sh
make_work_dir compare
old_target="${CARGO_TARGET_DIR:-$PWD/target}/compare-old"

cargo build -q --release --features unix-socket --example publish_bench
new_bench="$PWD/target/release/examples/publish_bench"
build_bench_at "$rev" "$old_target"
old_bench="$old_target/release/examples/publish_bench"
old_sha="$(git rev-parse --short "$rev")" new_sha="$(git rev-parse --short HEAD)"

mqtt_port="$(free_port)"
start_mosquitto "$mqtt_port" "${bench_mosquitto_options[@]}"
export MQTT_URI="tcp://127.0.0.1:$mqtt_port"
start_bench_redis

csv="benchmarks/compare-runs.csv"
[ -f "$csv" ] || echo "date,binary,commit,round,variant,mode,messages,msgs_per_s" > "$csv"
runs="$work/runs.csv"
: > "$runs"
today="$(date -u +%Y-%m-%d)"
for round in $(seq "$ROUNDS"); do
  for variant in "${variants[@]}"; do
    for mode in window sequential; do
      count="$COUNT"; [ "$mode" = sequential ] && count="$COUNT_SEQ"
      # Which binary goes first alternates from round to round.
      order=(old new); [ $((round % 2)) = 0 ] && order=(new old)
      for which in "${order[@]}"; do
        bench="$new_bench" sha="$new_sha"; [ "$which" = old ] && bench="$old_bench" sha="$old_sha"
        line="$(CLIENT_ID="compare-$which-$variant-$mode-$round-$$" "$bench" "$variant" "$mode" "$count" | grep '^RESULT ')"
        rate="$(sed -n 's/.* msgs_per_s=\([0-9.]*\).*/\1/p' <<<"$line")"
        echo "$today,$which,$sha,$round,$variant,$mode,$count,$rate" | tee -a "$csv" >> "$runs"
      done
    done
  done
done

echo "== $ROUNDS rounds; median msgs/s, this tree ($new_sha) and $rev ($old_sha)"
python3 - "$runs" "$old_sha" "$new_sha" <<'EOF'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
keys = sorted({(r[4], r[5]) for r in rows})
print(f"| variant | mode | {sys.argv[2]} msgs/s | {sys.argv[3]} msgs/s | {sys.argv[3]} / {sys.argv[2]} |")
print("|---|---|---:|---:|---:|")
for variant, mode in keys:
    med = {w: statistics.median(float(r[7]) for r in rows if (r[4], r[5], r[1]) == (variant, mode, w))
           for w in ("old", "new")}
    print(f"| {variant} | {mode} | {med['old']:,.0f} | {med['new']:,.0f} | {med['new'] / med['old']:.2f}x |")
EOF
