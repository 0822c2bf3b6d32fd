#!/usr/bin/env bash
# Regenerates tests/fixtures/traces: runs real Paho clients (MQTT 3.1.1 and 5)
# with the recording in-memory persistence of tools/record_traces.rs,
# against a throwaway mosquitto on a free port of 127.0.0.1 and against fake
# brokers inside the example, and writes one trace of persistence calls per
# scenario. Arguments, if any, keep only the scenarios whose name contains one.
# The mosquitto and its temp dir are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

out="tests/fixtures/traces"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
make_work_dir traces

mqtt_port="$(free_port)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt_port" > "$work/mosquitto.conf"
"$mosquitto_bin" -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for_port "$mqtt_port"

cargo build -q --example record_traces
# A full run replaces every trace, so a renamed scenario leaves no stale file.
[ $# -gt 0 ] || rm -f "$out"/*.trace
MQTT_URI="tcp://127.0.0.1:$mqtt_port" target/debug/examples/record_traces "$out" "$@"
echo "paho-mqtt $(grep -A1 'name = "paho-mqtt"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p'), recorded on $(uname -m)"
