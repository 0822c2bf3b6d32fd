#!/usr/bin/env bash
# Crash recovery, seen end to end: a throwaway redis-server and mosquitto on
# free ports in a temp dir; a publisher buffers COUNT QoS 1 messages while
# offline and is killed; the next run restores them from Redis and a
# subscriber receives them all. Everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

COUNT="${COUNT:-20}"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
make_work_dir demo

redis_port="$(free_port)"
mqtt_port="$(free_port)"
export REDIS_URL="redis://127.0.0.1:$redis_port/0" MQTT_URI="tcp://127.0.0.1:$mqtt_port" COUNT
export CLIENT_ID="demo-$$" TOPIC="demo/crash-recovery/$$"

cargo build -q --example crash_recovery
demo="target/debug/examples/crash_recovery"

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
pids+=($!)
wait_for_port "$redis_port"
echo "redis-server on 127.0.0.1:$redis_port (RAM only); no MQTT broker running yet"

echo
echo "== run 1: publish $COUNT messages with no broker reachable, then crash"
set +e
"$demo" buffer
status=$?
set -e
echo "publisher exited with status $status (134 = killed by SIGABRT)"
hash="$CLIENT_ID:127.0.0.1:$mqtt_port"
echo "Redis hash '$hash' holds $(redis-cli -p "$redis_port" HLEN "$hash") records"

echo
echo "== the broker comes up, a subscriber listens"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mqtt_port" > "$work/mosquitto.conf"
"$mosquitto_bin" -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for_port "$mqtt_port"
mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -t "$TOPIC" -q 1 -C "$COUNT" -W 30 > "$work/received.txt" &
sub_pid=$!
sleep 0.5

echo
echo "== run 2: same client id, restore from Redis and deliver"
"$demo" deliver
wait "$sub_pid" || true
received="$(wc -l < "$work/received.txt")"
echo
echo "subscriber received $received of $COUNT messages:"
head -3 "$work/received.txt"; [ "$received" -gt 3 ] && echo "..."
[ "$received" -eq "$COUNT" ] || { echo "FAILED: expected $COUNT" >&2; exit 1; }
echo "OK: $COUNT buffered -> process killed -> $COUNT delivered"
