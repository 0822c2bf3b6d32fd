#!/usr/bin/env bash
# Paho C's restore under AddressSanitizer, on stable Rust (tests/paho_restore_fuzz.rs).
#
#   scripts/asan.sh             build, self-test, then fuzz (PMR_RESTORE_FUZZ_ITERATIONS, default 5000)
#   scripts/asan.sh --self-test build and self-test only
#
# What is instrumented: the bundled Paho C only. paho-mqtt-sys builds it with
# the cmake crate, which puts the cc crate's flags for the target (CFLAGS,
# here CFLAGS_<triple>, so that no build script's C is touched) into
# CMAKE_C_FLAGS. Rust code is not instrumented: that needs `-Zsanitizer`
# (nightly). The ASAN runtime is linked in statically with link-args: rustc
# links with `-nodefaultlibs`, which makes gcc drop the `-lasan` that
# `-fsanitize=address` alone would add (undefined `__asan_init`), and a
# dynamic libasan would come after libc in the load order, where it cannot
# intercept malloc. Everything goes to its own target directory (about
# 0.6 GiB), built with `--target`, so that RUSTFLAGS do not reach build
# scripts and proc macros.
#
# Self-test: before fuzzing, three records that Paho C 1.3.16 mishandles are
# handed to it through a store with no check (the ignored test
# `unchecked_records_reach_paho`); ASAN must report each at its Paho C line,
# else the instrumentation is not there and a clean fuzz run would mean
# nothing.
#
# Fuzz: `restore_survives_every_record_the_check_lets_through` with many
# iterations: records through RedisPersistence's check into real Paho
# (before the check, paho::restore::at_open, the first bad record crashed it).
#
# ASAN_OPTIONS: detect_leaks=0 by default. A client created on valid records
# and dropped leaks nothing (LeakSanitizer is clean on that); Paho leaks on
# error paths of bad records (a PUBREL under an `s-` key: the Ack from
# MQTTPacket_ack, MQTTPersistence.c:399), which is not the crash this test
# is about. PMR_ASAN_DETECT_LEAKS=1 turns leak detection on.
set -euo pipefail
cd "$(dirname "$0")/.."

self_test_only=false
case "${1:-}" in
  --self-test) self_test_only=true ;;
  "") ;;
  *) echo "usage: $0 [--self-test]" >&2; exit 2 ;;
esac

triple=$(rustc -vV | sed -n 's/^host: //p')
[ "$(uname -s)" = Linux ] && command -v gcc >/dev/null || { echo "needs Linux and gcc (libasan)" >&2; exit 1; }
asan_a=$(gcc -print-file-name=libasan.a)
preinit=$(gcc -print-file-name=libasan_preinit.o)
[ -f "$asan_a" ] || { echo "no static libasan ($asan_a): apt-get install libgcc-12-dev" >&2; exit 1; }

export CARGO_TARGET_DIR=${PMR_ASAN_TARGET_DIR:-$PWD/target-asan}
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
export "CFLAGS_${triple//-/_}=-fsanitize=address -fno-omit-frame-pointer"
link_args=(-fsanitize=address "$preinit" -Wl,--whole-archive "$asan_a" -Wl,--no-whole-archive -lrt -ldl -lpthread -lm)
RUSTFLAGS=$(printf -- '-C link-arg=%s ' "${link_args[@]}")
export RUSTFLAGS
export ASAN_OPTIONS="detect_leaks=${PMR_ASAN_DETECT_LEAKS:-0}"

start=$SECONDS
echo "== build with ASAN (Paho C instrumented; target dir $CARGO_TARGET_DIR)"
cargo test --locked --no-run --target "$triple" --test paho_restore_fuzz
echo "== built in $((SECONDS - start)) s; $(du -sh "$CARGO_TARGET_DIR" | cut -f 1) in $CARGO_TARGET_DIR"

run() { cargo test --locked --quiet --target "$triple" --test paho_restore_fuzz -- --include-ignored --exact "$@"; }

# Each: a record, and the Paho C line ASAN must report it at.
self_tests=(
  # 0 bytes (paho.mqtt.c issue 990): the remaining length is read past the end.
  "s-1=|MQTTPersistence_restorePacket .*MQTTPersistence.c:389"
  # A PUBREL under an r- key, restored as a PUBLISH: its topic pointer is read from past the PUBREL's fields.
  "r-1=62020001|MQTTProtocol_storePublication .*MQTTProtocolClient.c:270"
  # A queued PUBLISH command with payloadlen -2^31: the bounds check wraps, and the read goes 2 GiB back.
  "c-1=0300000001000000612f6200000000800100000000000000|MQTTAsync_restoreCommand .*MQTTAsyncUtils.c:586"
)
echo "== self-test: ASAN reports what Paho C does with unchecked records"
for case in "${self_tests[@]}"; do
  record=${case%%|*} expected=${case#*|}
  log=$(mktemp)
  if PMR_RESTORE_FUZZ_RECORDS=$record run unchecked_records_reach_paho >"$log" 2>&1; then
    cat "$log"; rm -f "$log"
    echo "FAIL: Paho survived $record: is Paho C instrumented?" >&2
    exit 1
  fi
  if ! grep -q "ERROR: AddressSanitizer" "$log" || ! grep -Eq "$expected" "$log"; then
    cat "$log"; rm -f "$log"
    echo "FAIL: no ASAN report at $expected for $record" >&2
    exit 1
  fi
  echo "ok: $record -> $(grep -m 1 -o 'AddressSanitizer: [a-zA-Z-]*' "$log") in ${expected% *} (${expected#*.\*})"
  rm -f "$log"
done
$self_test_only && exit 0

# Paho C keeps 2 file descriptors of every client created and destroyed in a
# process, with no persistence at all (seen: 50 clients, 100 more fds), so a
# run is bounded by the fd limit (20,000 iterations failed at 9,996 with
# EMFILE under a limit of 20,000); the test caps its iterations to fit.
iterations=${PMR_RESTORE_FUZZ_ITERATIONS:-5000}
echo "== fuzz: $iterations iterations through the store's check into Paho's restore"
fuzz_start=$SECONDS
PMR_RESTORE_FUZZ_ITERATIONS=$iterations run restore_survives_every_record_the_check_lets_through --nocapture
echo "== fuzzed in $((SECONDS - fuzz_start)) s; total $((SECONDS - start)) s"
