#!/usr/bin/env bash
# End-to-end QoS 1 publish benchmark and flash-wear measurement.
#
#   scripts/bench-publish.sh [throughput|flash|all]     (default: all)
#
# Starts its own redis-server (RAM only: --save '' --appendonly no; TCP port
# and Unix socket) and mosquitto on free ports of 127.0.0.1 in a temp dir, and
# runs tools/publish_bench.rs (release build) for each variant:
#   redis-tcp, redis-unix   this crate
#   naive-tcp, naive-unix   the 0.3 algorithm, one Redis command per callback
#   paho-file               Paho's file persistence (directory on disk)
#   none                    no persistence
#
# throughput: ROUNDS rounds (default 5); in each, every variant runs once per
#   mode, in an order rotated from round to round (the machine is shared and
#   noisy). Modes: window (COUNT messages, default 5000, at most WINDOW=64
#   unacknowledged) and sequential (COUNT_SEQ messages, default 2000, each
#   waiting for its PUBACK). Payload PAYLOAD bytes (default 256). For the Redis
#   variants, Redis's own command counts (CONFIG RESETSTAT before each run,
#   INFO commandstats after) give the commands per message.
# flash: FLASH_COUNT messages (default 10000, window mode), then
#   FLASH_PACED_COUNT messages (default 400) paced at FLASH_RATE msgs/s
#   (default 20, sequential), with the store on a
#   freshly made ext4 file system on a loop device (needs root), standing in
#   for a flash partition: bytes the file system sent to its block device
#   (/sys/block/loopN/stat, after sync) and write_bytes of /proc/<pid>/io for
#   the publisher and redis-server. Variants: redis-unix with Redis RAM only,
#   redis-unix with Redis AOF (appendfsync everysec, then always), paho-file,
#   and redis-unix with RDB snapshots (save 60 1, appendonly no): paced only,
#   FLASH_RDB_SECONDS (default 150) at FLASH_RATE, long enough for two
#   snapshots, whose count (rdb_saves) is recorded as redis_snapshots, since
#   RDB costs per snapshot, not per message. scripts/bench-durability.sh
#   measures what each of these settings loses on kill -9 and power loss.
#
# Results: benchmarks/publish-runs.csv and benchmarks/flash-runs.csv (one line
# per run), then scripts/chart.py writes benchmarks/publish-summary.md and
# benchmarks/publish.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

phase="${1:-all}"
ROUNDS="${ROUNDS:-5}"
COUNT="${COUNT:-5000}"
COUNT_SEQ="${COUNT_SEQ:-2000}"
FLASH_COUNT="${FLASH_COUNT:-10000}"
FLASH_PACED_COUNT="${FLASH_PACED_COUNT:-400}"
FLASH_RATE="${FLASH_RATE:-20}"
FLASH_RDB_SECONDS="${FLASH_RDB_SECONDS:-150}"
export PAYLOAD="${PAYLOAD:-256}" WINDOW="${WINDOW:-64}"
read -r -a VARIANTS <<< "${VARIANTS:-naive-tcp naive-unix redis-tcp redis-unix redis-tcp-defer redis-unix-defer paho-file none}"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# The temp dir must be on a disk, not tmpfs, for the file-persistence runs.
work="$(mktemp -d "$(disk_temp_parent)/pmr-bench.XXXXXX")"
loop_device=""
cleanup() {
  stop_started_servers
  if [ -n "$loop_device" ]; then
    umount "$work/flash" 2>/dev/null || true
    losetup -d "$loop_device" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

proc_io() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/io" 2>/dev/null || echo -1; }

cargo build -q --release --features unix-socket --example publish_bench
bench="$PWD/target/release/examples/publish_bench"
mkdir -p benchmarks

mqtt_port="$(free_port)"
start_mosquitto "$mqtt_port" "${bench_mosquitto_options[@]}"
export MQTT_URI="tcp://127.0.0.1:$mqtt_port"

# Starts a redis-server: start_redis NAME DIR [extra options...]; sets redis_port and redis_pid.
start_redis() {
  local name="$1" dir="$2"; shift 2
  redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --unixsocket "$work/$name.sock" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$dir" --logfile "$work/$name.log" "$@" &
  redis_pid=$!
  pids+=("$redis_pid")
  wait_for_port "$redis_port"
  export REDIS_URL="redis://127.0.0.1:$redis_port/0" REDIS_UNIX_URL="redis+unix://$work/$name.sock"
}

# Commands clients sent since the last CONFIG RESETSTAT, as "total name:calls ...".
# INFO commandstats also counts the HSET and HDEL a script runs under their
# own names: they stay in the detail but leave the total, which counts each
# EVALSHA once. Every script call of these runs writes one record and removes
# one (a message moving from its command record to its PUBLISH record, or
# with deferral a command record and the removal it carries).
redis_commands() {
  redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' | awk -F'[_:,=]' '
    /^cmdstat_(hset|hget|hdel|hkeys|hgetall|hexists|hlen|del|exec|multi|evalsha|eval)/ {
      calls[$2] = $4; total += $4; detail = detail " " $2 ":" $4 }
    END { printf "%d%s\n", total - 2 * (calls["evalsha"] + calls["eval"]), detail }'
}

# One run: run_one CSV ROUND VARIANT MODE COUNT; appends a line to CSV.
run_one() {
  local csv="$1" round="$2" variant="$3" mode="$4" count="$5"
  local files="$work/files-$variant-$round-$mode" uses_redis=""
  case "$variant" in redis-*|naive-*) uses_redis=1;; esac
  # The flash phase passes a directory made before its measurement starts.
  if [ -n "$flash_files" ]; then files="$flash_files"; else rm -rf "$files"; mkdir -p "$files"; fi
  [ -n "$uses_redis" ] && redis-cli -p "$redis_port" CONFIG RESETSTAT > /dev/null
  local redis_before=0 redis_after=0
  [ -n "$uses_redis" ] && redis_before="$(proc_io "$redis_pid" write_bytes)"
  local line
  line="$(CLIENT_ID="bench-$variant-$mode-$round-$$" FILE_DIR="$files" "$bench" "$variant" "$mode" "$count" | grep '^RESULT ')"
  local commands="0"
  if [ -n "$uses_redis" ]; then
    redis_after="$(proc_io "$redis_pid" write_bytes)"
    commands="$(redis_commands)"
  fi
  [ -n "$flash_files" ] || rm -rf "$files"
  # RESULT key=value ... -> CSV fields in a fixed order.
  local -A f=()
  local kv
  for kv in ${line#RESULT }; do f[${kv%%=*}]="${kv#*=}"; done
  local total="${commands%% *}" detail=""
  [ "$total" != "$commands" ] && detail="${commands#* }"
  echo "$round,$variant,$mode,${f[messages]},${f[seconds]},${f[msgs_per_s]},${f[write_bytes]},${f[cancelled_write_bytes]},$((redis_after - redis_before)),$total,$detail" >> "$csv"
  printf '  %-10s %-10s %6s msgs in %8ss = %9s msgs/s  redis commands: %s\n' \
    "$variant" "$mode" "${f[messages]}" "${f[seconds]}" "${f[msgs_per_s]}" "$commands"
}

flash_files=""
header="round,variant,mode,messages,seconds,msgs_per_s,client_write_bytes,client_cancelled_write_bytes,redis_write_bytes,redis_commands,redis_command_detail"

if [ "$phase" = throughput ] || [ "$phase" = all ]; then
  csv="benchmarks/publish-runs.csv"
  echo "$header" > "$csv"
  start_redis redis "$work"
  echo "== throughput: $ROUNDS rounds, window $COUNT msgs (WINDOW=$WINDOW), sequential $COUNT_SEQ msgs, payload $PAYLOAD B"
  for round in $(seq "$ROUNDS"); do
    echo "round $round"
    n=${#VARIANTS[@]}
    for ((i = 0; i < n; i++)); do
      variant="${VARIANTS[$(((i + round) % n))]}"
      run_one "$csv" "$round" "$variant" window "$COUNT"
      run_one "$csv" "$round" "$variant" sequential "$COUNT_SEQ"
    done
  done
  kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
fi

if [ "$phase" = flash ] || [ "$phase" = all ]; then
  csv="benchmarks/flash-runs.csv"
  echo "$header,fs_written_bytes,redis_snapshots" > "$csv"
  if [ "$(id -u)" -ne 0 ] || ! command -v losetup > /dev/null; then
    echo "flash: needs root and losetup to make a loop-mounted ext4; skipped" >&2
    exit 0
  fi
  truncate -s 512M "$work/flash.img"
  # No lazy initialisation: it would zero inode tables in the background while we measure.
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/flash.img"
  loop_device="$(losetup -f --show "$work/flash.img")"
  mkdir -p "$work/flash"
  mount "$loop_device" "$work/flash"
  stat_file="/sys/block/$(basename "$loop_device")/stat"
  fs_written() { sync; sleep 1; sync; awk '{ print $7 * 512 }' "$stat_file"; }
  rdb_saves() {
    if [ -n "$redis_pid" ]; then
      redis-cli -p "$redis_port" INFO persistence | tr -d '\r' | awk -F: '$1 == "rdb_saves" { print $2 }'
    else
      echo 0
    fi
  }
  echo "== flash: $FLASH_COUNT msgs per window run, $FLASH_PACED_COUNT paced at $FLASH_RATE msgs/s, store on ext4 on $loop_device"
  flash_run() {
    local label="$1" variant="$2" mode="$3" count="$4"
    local before; before="$(fs_written)"
    local saves_before; saves_before="$(rdb_saves)"
    run_one "$csv.tmp" "$label" "$variant" "$mode" "$count"
    local saves_after; saves_after="$(rdb_saves)"
    local after; after="$(fs_written)"
    echo "$(cat "$csv.tmp"),$((after - before)),$((saves_after - saves_before))" >> "$csv"
    rm -f "$csv.tmp"
    echo "    file system on $loop_device received $((after - before)) bytes; Redis snapshots: $((saves_after - saves_before))"
  }
  stop_redis() { kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=""; }
  mkdir -p "$work/flash/redis-ram" "$work/flash/redis-rdb" "$work/flash/redis-aof" \
    "$work/flash/redis-aof-always" "$work/flash/paho"
  # Control: what the idle file system receives in 10 s (journal, atime: should be 0).
  before="$(fs_written)"; sleep 10; after="$(fs_written)"
  echo "    idle control: file system on $loop_device received $((after - before)) bytes in 10 s"
  echo "idle-10s,none,idle,0,10,0,0,0,0,0,,$((after - before)),0" >> "$csv"
  start_redis redis-ram "$work/flash/redis-ram"
  flash_run redis-ram redis-unix window "$FLASH_COUNT"
  RATE="$FLASH_RATE" flash_run redis-ram redis-unix sequential "$FLASH_PACED_COUNT"
  stop_redis
  # RDB costs a snapshot a minute (once anything changed), whatever the
  # message rate: a burst would measure no snapshot at all, so only a paced
  # run long enough for two snapshots (Redis counts 60 s from its start).
  start_redis redis-rdb "$work/flash/redis-rdb" --save '60 1'
  RATE="$FLASH_RATE" flash_run redis-rdb-60s redis-unix sequential \
    "$(awk -v s="$FLASH_RDB_SECONDS" -v r="$FLASH_RATE" 'BEGIN { printf "%d", s * r }')"
  echo "    dump.rdb: $(stat -c %s "$work/flash/redis-rdb/dump.rdb" 2>/dev/null || echo none) bytes"
  stop_redis
  start_redis redis-aof "$work/flash/redis-aof" --appendonly yes --appendfsync everysec
  flash_run redis-aof-everysec redis-unix window "$FLASH_COUNT"
  RATE="$FLASH_RATE" flash_run redis-aof-everysec redis-unix sequential "$FLASH_PACED_COUNT"
  stop_redis
  start_redis redis-aof-always "$work/flash/redis-aof-always" --appendonly yes --appendfsync always
  flash_run redis-aof-always redis-unix window "$FLASH_COUNT"
  RATE="$FLASH_RATE" flash_run redis-aof-always redis-unix sequential "$FLASH_PACED_COUNT"
  stop_redis
  flash_files="$work/flash/paho"
  flash_run paho-file paho-file window "$FLASH_COUNT"
  RATE="$FLASH_RATE" flash_run paho-file paho-file sequential "$FLASH_PACED_COUNT"
fi

python3 scripts/chart.py benchmarks
