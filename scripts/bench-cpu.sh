#!/usr/bin/env bash
# Device CPU per online QoS 1 message: what a client pays in CPU time, not in
# latency, to keep its in-flight messages in this store, against Paho's file
# persistence and no persistence. On a small device CPU (and the energy it
# draws) is the cost that matters once throughput suffices.
#
#   scripts/bench-cpu.sh [REV]          (default REV: 048e046)
#
# Each run is one tools/publish_bench.rs process publishing COUNT messages
# (default 10000) one at a time in sequential mode (each waits for its
# PUBACK). The variants, VARIANTS (default `none paho-file redis-unix
# rev:redis-unix redis-tcp`; `rev:` runs REV's binary, built from that
# commit), alternate in an order rotated from round to round over ROUNDS
# rounds (default 3), all against one redis-server (RAM only) and one
# mosquitto, so that the noise of a shared machine falls on all alike.
# CPUS (a taskset CPU list, e.g. `1`; default unset: any CPU) pins the
# servers and the clients to those CPUs: one CPU stands for a single-core
# device, and here it also made runs repeat better (see below).
#
# Counted per run, as "the device": the client process's user+sys CPU, all
# its threads, from wait4 (run_counting_cpu in lib.sh: exact to the µs), and
# Redis's used_cpu_user + used_cpu_sys (INFO cpu, getrusage of the server)
# before and after the run, since on the device Redis runs beside the client.
# Both include the run's fixed costs (process start, connect, opening and
# closing the store) and Redis's idle cron for the run's duration, which the
# `none` runs pay too: with COUNT=1, about 6.5 ms of client and 1-2 ms of
# Redis CPU per run, alike for every variant within ±0.5 ms of noise, so
# under 0.05 µs per message of difference at COUNT=10000. Not counted:
# mosquitto's CPU (the broker, not the device), and this script's own
# processes. Loopback networking is kernel time of whichever process sends
# (the softirq runs in its context), so the client's sys time includes some
# receiving done for mosquitto or Redis, as it would on one device for Redis.
#
# Prints the median µs per message of client, Redis and both, the total above
# `none` (medians of the differences with `none` in the same round), and that
# extra cost as a ratio to paho-file's, and for a variant run with both
# binaries the median of the per-round differences (this tree - REV). Appends
# every run to benchmarks/cpu-runs.csv. Loopback only (127.0.0.1 and a Unix
# socket).
#
# The numbers move with the machine's load. On 2 shared cores with builds
# running, over 40 rounds, the middle half of a variant's totals lay within
# about ±12% of its median unpinned (extremes ±50%), and within -5%..+9%
# (paho-file -8%..+18%) with CPUS=1, which also costs less per message, with
# no wake-ups across CPUs (redis-unix 109 µs instead of 201). Compare
# variants of one run, not runs. Two builds of one commit (this tree and REV
# at 048e046) came out 1.1% apart on the REV line with CPUS=1 and 2.5%
# unpinned (their medians in the table: 1.5% and 9%). The default 3 rounds
# are a smoke test (that line's quartiles spanned ±70 µs unpinned): 40
# rounds took 8 min with CPUS=1 and 10 min unpinned.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

rev="${1:-048e046}"
COUNT="${COUNT:-10000}" ROUNDS="${ROUNDS:-3}"
read -r -a variants <<<"${VARIANTS:-none paho-file redis-unix rev:redis-unix redis-tcp}"
export PAYLOAD="${PAYLOAD:-256}"

# On a disk, not tmpfs: paho-file's CPU depends on the file system it writes.
TMPDIR="$(disk_temp_parent)" make_work_dir cpu

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release --features unix-socket --example publish_bench
this_bench="$target/release/examples/publish_bench"
build_bench_at "$rev" "$target/cpu-rev"
rev_bench="$target/cpu-rev/release/examples/publish_bench"
rev_sha="$(git rev-parse --short "$rev")" this_sha="$(git rev-parse --short HEAD)"
git diff --quiet HEAD -- src Cargo.toml Cargo.lock examples || this_sha+="+dirty"

# From here on, every process started (servers, clients) inherits the pinning.
if [ -n "${CPUS:-}" ]; then taskset -p -c "$CPUS" $$ > /dev/null; fi

mqtt_port="$(free_port)"
start_mosquitto "$mqtt_port" "${bench_mosquitto_options[@]}"
export MQTT_URI="tcp://127.0.0.1:$mqtt_port"
start_bench_redis

# Redis's CPU seconds so far, "user sys".
redis_cpu() {
  redis-cli -u "$REDIS_URL" INFO cpu | tr -d '\r' |
    awk -F: '$1 == "used_cpu_user" { u = $2 } $1 == "used_cpu_sys" { s = $2 } END { print u, s }'
}

# One run: run_one ROUND SPEC COUNT; prints a CSV line without the date.
run_one() {
  local round="$1" spec="$2" count="$3" which=this variant="$2"
  case "$spec" in rev:*) which=rev variant="${spec#rev:}";; esac
  local bench="$this_bench" sha="$this_sha"
  [ "$which" = rev ] && bench="$rev_bench" sha="$rev_sha"
  rm -rf "$work/files" && mkdir "$work/files"
  # Every run starts from an empty Redis, so none pays for an earlier one's keys.
  redis-cli -u "$REDIS_URL" FLUSHALL > /dev/null
  local redis_before redis_after
  redis_before="$(redis_cpu)"
  run_counting_cpu "$work/client-cpu" env CLIENT_ID="cpu-$which-$variant-$round-$$" FILE_DIR="$work/files" \
    "$bench" "$variant" sequential "$count" > "$work/out" || return
  redis_after="$(redis_cpu)"
  local seconds
  seconds="$(sed -n 's/^RESULT .* seconds=\([0-9.]*\).*/\1/p' "$work/out")"
  [ -n "$seconds" ] || { echo "no RESULT line from $bench $variant" >&2; return 1; }
  local client_user client_sys
  read -r client_user client_sys < "$work/client-cpu"
  awk -v pre="$which,$sha,$round,$variant,$count,$seconds,$client_user,$client_sys" \
    -v b="$redis_before" -v a="$redis_after" \
    -v cpus="${CPUS:-all}" \
    'BEGIN { split(b, x, " "); split(a, y, " "); printf "%s,%.6f,%.6f,%s\n", pre, y[1] - x[1], y[2] - x[2], cpus }'
}

# Untimed: each binary's first run loads its pages and warms the servers.
for spec in none rev:none; do run_one 0 "$spec" 200 > /dev/null; done

csv="benchmarks/cpu-runs.csv"
mkdir -p benchmarks
[ -f "$csv" ] || echo "date,binary,commit,round,variant,messages,seconds,client_user_s,client_sys_s,redis_user_s,redis_sys_s,cpus" > "$csv"
runs="$work/runs.csv"
: > "$runs"
today="$(date -u +%Y-%m-%d)"
echo "== $ROUNDS rounds of $COUNT sequential QoS 1 publishes, payload $PAYLOAD B, CPUs ${CPUS:-all}; this tree $this_sha, rev $rev_sha"
n=${#variants[@]}
for round in $(seq "$ROUNDS"); do
  for ((i = 0; i < n; i++)); do
    line="$(run_one "$round" "${variants[$(((i + round) % n))]}" "$COUNT")"
    echo "$today,$line" | tee -a "$csv" >> "$runs"
    echo "  round $round: $line"
  done
done

echo "== median CPU µs per message over $ROUNDS rounds (client = publish_bench; Redis = redis-server; mosquitto not counted)"
python3 - "$runs" "${variants[@]}" <<'EOF'
import csv, statistics, sys
from collections import defaultdict
runs, specs = sys.argv[1], sys.argv[2:]
us = defaultdict(dict)  # spec -> round -> (client, redis, msgs/s)
for r in csv.reader(open(runs)):
    _, which, sha, rnd, variant, n, secs, cu, cs, ru, rs, _ = r
    spec = f"rev:{variant}" if which == "rev" else variant
    n = int(n)
    us[spec][rnd] = ((float(cu) + float(cs)) * 1e6 / n, (float(ru) + float(rs)) * 1e6 / n, n / float(secs), sha)
med = statistics.median
def above_none(spec):
    if "none" not in us or spec == "none":
        return None
    return med(c + r - us["none"][k][0] - us["none"][k][1] for k, (c, r, _, _) in us[spec].items())
file_extra = above_none("paho-file") if "paho-file" in us else None
print("| variant | commit | client µs/msg | Redis µs/msg | total µs/msg (min–max) | above none µs/msg | above none / paho-file's | msgs/s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for spec in specs:
    v = list(us[spec].values())
    totals = [c + r for c, r, _, _ in v]
    extra = above_none(spec)
    ratio = f"{extra / file_extra:.2f}" if extra is not None and file_extra else "-"
    print(f"| {spec} | {v[0][3]} | {med(c for c, _, _, _ in v):.1f} | {med(r for _, r, _, _ in v):.1f} "
          f"| {med(totals):.1f} ({min(totals):.1f}–{max(totals):.1f}) "
          f"| {'-' if extra is None else f'{extra:.1f}'} | {ratio} | {med(m for _, _, m, _ in v):,.0f} |")
for spec in specs:
    if spec.startswith("rev:") and spec[4:] in us:
        this, old = us[spec[4:]], us[spec]
        d = [this[k][0] + this[k][1] - old[k][0] - old[k][1] for k in this if k in old]
        q1, q2, q3 = statistics.quantiles(d, n=4) if len(d) > 1 else (d[0],) * 3
        print(f"{spec[4:]}: this tree - {old[next(iter(old))][3]}, per round: median {q2:+.1f} µs/msg "
              f"(quartiles {q1:+.1f} to {q3:+.1f}), {q2 / med(o[0] + o[1] for o in old.values()):+.1%}")
EOF
