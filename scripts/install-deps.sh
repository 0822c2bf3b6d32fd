#!/usr/bin/env bash
# Installs what the tests and the demo need, only what is missing:
# redis-server, mosquitto (+ clients), cmake (Paho C is built from source),
# pkg-config and libssl-dev (features `tls` and `ssl`), the openssl CLI (the TLS
# test makes its certificates with it), rustfmt and clippy.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
have mosquitto || missing+=(mosquitto)
have mosquitto_sub || missing+=(mosquitto-clients)
have cmake || missing+=(cmake)
have pkg-config || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
have openssl || missing+=(openssl)

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

# `--rust VERSION` also installs that toolchain (scripts/test.sh asks for the
# rust-version of Cargo.toml, to check that the claim holds). Not fatal: a
# machine may not reach rustup's servers; scripts/test.sh says what it skips.
if [ "${1:-}" = --rust ]; then
  toolchain=${2:?--rust needs a version}
  rustup toolchain list | grep -q "^$toolchain-" \
    || rustup toolchain install "$toolchain" --profile minimal \
    || echo "could not install Rust $toolchain" >&2
fi
