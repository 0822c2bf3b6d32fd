#!/usr/bin/env bash
# Regenerates tests/fixtures/records: runs real Paho clients (MQTT 3.1.1 and 5)
# with RedisPersistence on a throwaway redis-server, against a throwaway
# mosquitto and a fake broker inside tools/capture_fixtures.rs, and dumps
# every record they leave in Redis. Both servers run on free ports of
# 127.0.0.1 in a temp dir and are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

out="tests/fixtures/records"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
make_work_dir fixtures

redis_port="$(free_port)"
mqtt_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
pids+=($!)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt_port" > "$work/mosquitto.conf"
"$mosquitto_bin" -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for_port "$redis_port"
wait_for_port "$mqtt_port"

cargo build -q --example capture_fixtures
rm -f "$out"/*.bin "$out"/manifest.tsv
REDIS_URL="redis://127.0.0.1:$redis_port/0" MQTT_URI="tcp://127.0.0.1:$mqtt_port" \
  target/debug/examples/capture_fixtures "$out"
echo "paho-mqtt $(grep -A1 'name = "paho-mqtt"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p'), captured on $(uname -m)"
