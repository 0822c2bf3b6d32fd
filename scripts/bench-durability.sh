#!/usr/bin/env bash
# What each store setting loses on kill -9 and on a (simulated) power cut,
# and what persist_qos0(false) saves.
#
#   scripts/bench-durability.sh [loss|qos0|all]     (default: all)
#
# loss (needs root and losetup): a freshly made ext4 on a loop device stands
#   in for the device's flash partition; the store lives there. For each mode
#   (MODES, default: redis-ram redis-rdb redis-aof-everysec redis-aof-always
#   paho-file), tools/durability_fill.rs publishes COUNT QoS 1 messages
#   (default 200) at RATE msgs/s (default 20) with no broker to send them to,
#   so every one stays in the store as a record, and then waits. Twice:
#   - kill -9: once Redis holds the COUNT records, kill -9 redis-server (and
#     the publisher), restart redis-server on the same directory, count the
#     records in the hash. For paho-file, kill -9 of the publisher is the
#     crash, and the records are the files left in its directory.
#   - power cut: the device's state at an instant is what the loop device has
#     written to its backing file; a copy of that file, taken while nothing
#     is written to the loop device (its completed-write count unchanged
#     across the copy and nothing in flight, else the copy is taken again)
#     and without any sync, is what a power cut at that instant leaves. Copies
#     at OFFSETS seconds (default "0 2 6 35") after the records are in the
#     store, for redis-rdb also once the next snapshot is done, and a control
#     copy taken after sync. Each copy is checked with e2fsck -fy (journal
#     replay), mounted, and a redis-server started on the copy's directory
#     (or the files counted).
#   This models a device that loses nothing the block device has written (no
#   volatile write cache); one that does would lose more.
# qos0: COUNT0 (default 1000) QoS 0 messages with persist_qos0 true and false,
#   offline (nothing to send them to) and online (to a mosquitto of its own):
#   the store's put and remove counts, its removes answered from its index,
#   its round trips, Redis's own command counts (INFO commandstats) and the
#   records left.
#
# Results: benchmarks/durability-runs.csv (loss), benchmarks/durability-qos0.csv
# (qos0); everything printed also goes to benchmarks/durability-run.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

phase="${1:-all}"
COUNT="${COUNT:-200}"
RATE="${RATE:-20}"
COUNT0="${COUNT0:-1000}"
OFFSETS="${OFFSETS:-0 2 6 35}"
export PAYLOAD="${PAYLOAD:-256}"
read -r -a MODES <<< "${MODES:-redis-ram redis-rdb redis-aof-everysec redis-aof-always paho-file}"
bytes_field="paho-mqtt-redis:bytes"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
work="$(mktemp -d "$(disk_temp_parent)/pmr-durability.XXXXXX")"
mounts=()
loops=()
cleanup() {
  stop_started_servers
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}" 2>/dev/null || true; done
  for loop in "${loops[@]}"; do losetup -d "$loop" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p benchmarks
log="benchmarks/durability-run.txt"
if [ "$phase" = all ]; then : > "$log"; fi
say() { echo "$*" | tee -a "$log"; }
say "\$ scripts/bench-durability.sh $phase    # COUNT=$COUNT RATE=$RATE OFFSETS=\"$OFFSETS\" COUNT0=$COUNT0 PAYLOAD=$PAYLOAD"

cargo build -q --release --features unix-socket --example durability_fill
fill_bin="$PWD/target/release/examples/durability_fill"

# Redis options of each mode (the store's directory is --dir).
redis_options() {
  case "$1" in
    redis-ram) echo "--save '' --appendonly no";;
    redis-rdb) echo "--save '60 1' --appendonly no";;
    redis-aof-everysec) echo "--save '' --appendonly yes --appendfsync everysec";;
    redis-aof-always) echo "--save '' --appendonly yes --appendfsync always";;
    *) return 1;;
  esac
}

# start_redis MODE DIR SOCKET: a redis-server on a Unix socket only; sets redis_pid.
start_redis() {
  local mode="$1" dir="$2" sock="$3" options
  options="$(redis_options "$mode")"
  eval "set -- $options"
  # The log goes next to the socket, off the device.
  redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir" \
    --logfile "$sock.log" "$@" &
  redis_pid=$!
  pids+=("$redis_pid")
  # PONG once listening and done loading the RDB or AOF.
  local _
  for _ in $(seq 200); do
    [ "$(redis-cli -s "$sock" PING 2>/dev/null)" = PONG ] && return 0
    kill -0 "$redis_pid" 2>/dev/null || { echo "redis-server did not start: $(tail -3 "$sock.log")" >&2; return 1; }
    sleep 0.05
  done
  echo "redis-server on $sock does not answer" >&2
  return 1
}

# Records of a store: the fields of its hash, without the byte count.
count_records() {
  local sock="$1" hash="$2" n extra
  n="$(redis-cli -s "$sock" HLEN "$hash")"
  extra="$(redis-cli -s "$sock" HEXISTS "$hash" "$bytes_field")"
  echo $((n - extra))
}

# Paho file persistence: "files non-empty-files" under a directory.
count_files() {
  [ -d "$1" ] || { echo "0 0"; return; }
  echo "$(find "$1" -type f | wc -l) $(find "$1" -type f -size +0 | wc -l)"
}

# start_fill VARIANT DIR CLIENT_ID: the publisher, in the background; waits for
# its READY line and sets fill_pid and fill_hash.
start_fill() {
  local variant="$1" dir="$2" id="$3" out="$work/$3.out"
  CLIENT_ID="$id" FILE_DIR="$dir" COUNT="$COUNT" RATE="$RATE" HOLD=1 \
    "$fill_bin" "$variant" > "$out" 2>&1 &
  fill_pid=$!
  pids+=("$fill_pid")
  local _
  for _ in $(seq 1200); do
    if grep -q '^READY ' "$out"; then
      fill_hash="$(sed -n 's/^READY .* hash=//p' "$out")"
      say "    publisher: $(grep '^READY ' "$out")"
      return 0
    fi
    kill -0 "$fill_pid" 2>/dev/null || { cat "$out" >&2; return 1; }
    sleep 0.05
  done
  echo "the publisher printed no READY line" >&2
  return 1
}

# Waits until Redis holds COUNT records (the store writes behind: the last
# publish may return before Redis has run its write).
wait_records() {
  local sock="$1" hash="$2" _
  for _ in $(seq 400); do
    [ "$(count_records "$sock" "$hash")" -ge "$COUNT" ] && return 0
    sleep 0.005
  done
  echo "Redis holds $(count_records "$sock" "$hash") of $COUNT records" >&2
  return 1
}

kill9() { kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

if [ "$phase" = loss ] || [ "$phase" = all ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v losetup > /dev/null; then
    echo "loss: needs root and losetup to make a loop-mounted ext4; skipped" >&2
  else
    csv="benchmarks/durability-runs.csv"
    echo "mode,event,seconds_after_records_in_store,published,kept,kept_nonempty_files,copy_attempts,e2fsck_rc" > "$csv"
    truncate -s 256M "$work/device.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/device.img"
    device="$(losetup -f --show "$work/device.img")"
    loops+=("$device")
    mkdir -p "$work/device"
    mount "$device" "$work/device"
    mounts+=("$work/device")
    stat_file="/sys/block/$(basename "$device")/stat"
    # Writes completed and in flight on the loop device.
    device_activity() { awk '{ print $5, $9 }' "$stat_file"; }
    say "== loss: $COUNT QoS 1 messages at $RATE msgs/s, payload $PAYLOAD B, no broker; store on ext4 on $device; $(uname -r)"

    # device_copy OUT: the device as a power cut at this instant leaves it; sets copy_attempts.
    device_copy() {
      local out="$1" before after
      for copy_attempts in $(seq 50); do
        before="$(device_activity)"
        if [ "${before#* }" = 0 ]; then
          cp --sparse=always "$work/device.img" "$out"
          after="$(device_activity)"
          [ "$before" = "$after" ] && return 0
        fi
        sleep 0.01
      done
      echo "the loop device was never idle for a copy" >&2
      return 1
    }

    # open_copy IMG MOUNTPOINT: e2fsck -fy (replays the journal), mount; sets fsck_rc.
    open_copy() {
      fsck_rc=0
      e2fsck -fy "$1" > "$1.fsck" 2>&1 || fsck_rc=$?
      local loop
      loop="$(losetup -f --show "$1")"
      loops+=("$loop")
      mkdir -p "$2"
      mount "$loop" "$2"
      mounts+=("$2")
    }
    close_copy() {
      umount "$2"
      local loop
      loop="$(losetup -j "$1" -O NAME -n)"
      losetup -d "$loop"
      rm -f "$1" "$1.fsck"
    }

    record() {  # mode event offset kept nonempty attempts fsck
      echo "$1,$2,$3,$COUNT,$4,$5,$6,$7" >> "$csv"
      say "    $2 at +$3 s: $4 of $COUNT kept${5:+ ($5 files non-empty)}${7:+, e2fsck rc $7}"
    }

    for mode in "${MODES[@]}"; do
      say "-- $mode"
      variant=redis-unix
      [ "$mode" = paho-file ] && variant=paho-file

      # kill -9: Redis (or, for paho-file, the publisher) right after the records are in the store.
      dir="$work/device/$mode-kill"
      mkdir -p "$dir"
      sock="$work/$mode-kill.sock"
      if [ "$variant" = redis-unix ]; then
        start_redis "$mode" "$dir" "$sock"
        export REDIS_UNIX_URL="redis+unix://$sock"
        export MQTT_URI="tcp://127.0.0.1:$(free_port)"
        start_fill "$variant" "$dir" "dur-$mode-kill"
        wait_records "$sock" "$fill_hash"
        kill9 "$redis_pid"
        kill9 "$fill_pid"
        start_redis "$mode" "$dir" "$sock"
        record "$mode" kill-9-redis 0 "$(count_records "$sock" "$fill_hash")" "" "" ""
        kill9 "$redis_pid"
      else
        export MQTT_URI="tcp://127.0.0.1:$(free_port)"
        start_fill "$variant" "$dir" "dur-$mode-kill"
        kill9 "$fill_pid"
        read -r files nonempty <<< "$(count_files "$dir")"
        record "$mode" kill-9-publisher 0 "$files" "$nonempty" "" ""
      fi

      # Power cut: copies of the device at OFFSETS after the records are in the store.
      dir="$work/device/$mode-power"
      mkdir -p "$dir"
      sock="$work/$mode-power.sock"
      export MQTT_URI="tcp://127.0.0.1:$(free_port)"
      if [ "$variant" = redis-unix ]; then
        start_redis "$mode" "$dir" "$sock"
        export REDIS_UNIX_URL="redis+unix://$sock"
        start_fill "$variant" "$dir" "dur-$mode-power"
        wait_records "$sock" "$fill_hash"
      else
        start_fill "$variant" "$dir" "dur-$mode-power"
      fi
      t0="$(date +%s.%N)"
      copies=()
      for offset in $OFFSETS; do
        sleep "$(awk -v t0="$t0" -v o="$offset" -v now="$(date +%s.%N)" 'BEGIN { d = t0 + o - now; print (d > 0 ? d : 0) }')"
        at="$(awk -v t0="$t0" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f", now - t0 }')"
        device_copy "$work/copy-$offset.img"
        copies+=("power-cut $at $copy_attempts $work/copy-$offset.img")
      done
      if [ "$mode" = redis-rdb ]; then
        # Once the next snapshot (60 s after Redis started) is done.
        for _ in $(seq 1200); do
          info="$(redis-cli -s "$sock" INFO persistence | tr -d '\r')"
          grep -q '^rdb_changes_since_last_save:0$' <<< "$info" && grep -q '^rdb_bgsave_in_progress:0$' <<< "$info" && break
          sleep 0.1
        done
        at="$(awk -v t0="$t0" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f", now - t0 }')"
        device_copy "$work/copy-snapshot.img"
        copies+=("power-cut-after-snapshot $at $copy_attempts $work/copy-snapshot.img")
      fi
      sync
      at="$(awk -v t0="$t0" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f", now - t0 }')"
      device_copy "$work/copy-control.img"
      copies+=("control-sync-then-copy $at $copy_attempts $work/copy-control.img")
      kill9 "$fill_pid"
      if [ "$variant" = redis-unix ]; then kill9 "$redis_pid"; fi

      for copy in "${copies[@]}"; do
        read -r event at attempts img <<< "$copy"
        open_copy "$img" "$work/copy"
        if [ "$variant" = redis-unix ]; then
          # A directory whose creation the copy lacks holds no records either.
          [ -d "$work/copy/$mode-power" ] || { say "    ($event at +$at s: no $mode-power directory on the copy)"; mkdir -p "$work/copy/$mode-power"; }
          start_redis "$mode" "$work/copy/$mode-power" "$work/copy.sock"
          kept="$(count_records "$work/copy.sock" "$fill_hash")"
          kill9 "$redis_pid"
          record "$mode" "$event" "$at" "$kept" "" "$attempts" "$fsck_rc"
        else
          read -r files nonempty <<< "$(count_files "$work/copy/$mode-power")"
          record "$mode" "$event" "$at" "$files" "$nonempty" "$attempts" "$fsck_rc"
        fi
        close_copy "$img" "$work/copy"
      done
    done
  fi
fi

if [ "$phase" = qos0 ] || [ "$phase" = all ]; then
  csv="benchmarks/durability-qos0.csv"
  echo "connection,persist_qos0,messages,store_puts,store_removes,store_index_hits,store_round_trips,redis_commands,records_left" > "$csv"
  mqtt_port="$(free_port)"
  start_mosquitto "$mqtt_port" "persistence false"
  mkdir -p "$work/qos0"
  start_redis redis-ram "$work/qos0" "$work/qos0.sock"
  export REDIS_UNIX_URL="redis+unix://$work/qos0.sock"
  say "== qos0: $COUNT0 QoS 0 messages, unpaced, payload $PAYLOAD B, RAM-only Redis over the Unix socket"
  for connection in offline online; do
    for persist in 1 0; do
      online=0 uri="tcp://127.0.0.1:$(free_port)"
      [ "$connection" = online ] && online=1 uri="tcp://127.0.0.1:$mqtt_port"
      redis-cli -s "$work/qos0.sock" CONFIG RESETSTAT > /dev/null
      line="$(MQTT_URI="$uri" CLIENT_ID="qos0-$connection-$persist" COUNT="$COUNT0" RATE=0 QOS=0 \
        PERSIST_QOS0="$persist" ONLINE="$online" HOLD=0 "$fill_bin" redis-unix | grep '^READY ')"
      puts="$(sed 's/.* puts=\([0-9]*\).*/\1/' <<< "$line")"
      removes="$(sed 's/.* removes=\([0-9]*\).*/\1/' <<< "$line")"
      index_hits="$(sed 's/.* index_hits=\([0-9]*\).*/\1/' <<< "$line")"
      round_trips="$(sed 's/.* round_trips=\([0-9]*\).*/\1/' <<< "$line")"
      hash="${line##* hash=}"
      commands="$(redis-cli -s "$work/qos0.sock" INFO commandstats | tr -d '\r' |
        awk -F'[_:,=]' '/^cmdstat_(hset|hdel|hgetall|hget|del|evalsha|eval|hkeys|hlen)/ { printf "%s%s:%s", sep, $2, $4; sep = " " }')"
      left="$(count_records "$work/qos0.sock" "$hash")"
      echo "$connection,$persist,$COUNT0,$puts,$removes,$index_hits,$round_trips,$commands,$left" >> "$csv"
      say "    $connection, persist_qos0($([ "$persist" = 1 ] && echo true || echo false)): $puts puts, $removes removes ($index_hits answered from the index), $round_trips round trips, Redis: ${commands:-no commands}, $left records left"
    done
  done
fi
