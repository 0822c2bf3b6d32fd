# shellcheck shell=bash
# Shared by the scripts that start their own throwaway servers (demo.sh,
# capture-fixtures.sh, bench-publish.sh): source it, start servers with their
# PIDs added to `pids`, and call stop_started_servers from the EXIT trap.

pids=()

# Kills every process whose PID is in `pids`, and reaps them.
stop_started_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# A TCP port on 127.0.0.1 that nothing listened on a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits up to 10 s until something accepts connections on 127.0.0.1:$1.
wait_for_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2
  return 1
}

# Debian installs mosquitto in /usr/sbin, which is not on every PATH.
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

# Starts mosquitto on 127.0.0.1:$1 with anonymous access and the other
# arguments as lines of its configuration (in $work), and waits for it.
start_mosquitto() {
  local port="$1"; shift
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
  printf '%s\n' "$@" >> "$work/mosquitto.conf"
  "$mosquitto_bin" -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
  pids+=($!)
  wait_for_port "$port"
}

# The benchmarks' broker: no persistence of its own, queues and in-flight
# windows that never limit the publisher (see tests/support/mosquitto.rs for
# why `max_inflight_messages 0`).
# shellcheck disable=SC2034 # used by the scripts that source this file
bench_mosquitto_options=("persistence false" "max_queued_messages 100000" "max_inflight_messages 0")

# Where to make a temp dir that must be on a disk (file persistence, flash
# measurements): $TMPDIR or /tmp, or target/ if that is a tmpfs (RAM).
disk_temp_parent() {
  local parent="${TMPDIR:-/tmp}"
  # stat, not findmnt: findmnt prints one line per mount of the same point.
  if [ "$(stat -f -c %T "$parent" 2>/dev/null || true)" = tmpfs ]; then
    parent="$PWD/target"
  fi
  echo "$parent"
}

# Makes the temp dir `work` (named after $1) and an EXIT trap that stops the
# started servers and removes it. A script that needs more cleanup sets its own.
make_work_dir() {
  work="$(mktemp -d -t "paho-mqtt-redis-$1.XXXXXX")"
  trap 'stop_started_servers; rm -rf "$work"' EXIT
}

# Builds tools/publish_bench.rs (release, feature unix-socket) of commit $1
# into target dir $2, from a worktree under $work removed once built.
build_bench_at() {
  local tree="$work/tree-$1" status=0
  git worktree add -q --detach "$tree" "$1"
  (cd "$tree" && CARGO_TARGET_DIR="$2" cargo build -q --release --features unix-socket --example publish_bench) || status=$?
  git worktree remove --force "$tree"
  return "$status"
}

# Starts a RAM-only redis-server on a free port and a Unix socket in $work,
# waits for it, and exports REDIS_URL and REDIS_UNIX_URL for publish_bench.
start_bench_redis() {
  local port
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --unixsocket "$work/redis.sock" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$work" --logfile "$work/redis.log" &
  pids+=($!)
  wait_for_port "$port"
  export REDIS_URL="redis://127.0.0.1:$port/0" REDIS_UNIX_URL="redis+unix://$work/redis.sock"
}

# Runs a command and writes the CPU seconds it used, "user sys", to file $1:
# the rusage that wait4 returns for that one process (all its threads), not
# this shell's or any other child's. The kernel keeps user+sys exact (the
# scheduler's runtime, here to the µs); only its split into user and sys is
# sampled at timer ticks. /proc/PID/stat and /usr/bin/time give 10 ms steps.
# Returns the command's exit status.
run_counting_cpu() {
  local out="$1"; shift
  python3 -c '
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as error:
        print(f"{sys.argv[2]}: {error}", file=sys.stderr)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_utime:.6f} {usage.ru_stime:.6f}\n")
sys.exit(os.waitstatus_to_exitcode(status))
' "$out" "$@"
}
