#!/usr/bin/env bash
# Installs what cross-building and cross-testing need, only what is missing:
# Debian's C cross compilers and C libraries for arm64 and armhf (the linker,
# and the compiler for the bundled Paho C), qemu-user to run the binaries, and
# the Rust standard libraries of both targets.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
have aarch64-linux-gnu-gcc || missing+=(gcc-aarch64-linux-gnu)
have arm-linux-gnueabihf-gcc || missing+=(gcc-arm-linux-gnueabihf)
[ -f /usr/aarch64-linux-gnu/include/stdio.h ] || missing+=(libc6-dev-arm64-cross)
[ -f /usr/arm-linux-gnueabihf/include/stdio.h ] || missing+=(libc6-dev-armhf-cross)
{ have qemu-aarch64 && have qemu-arm; } || missing+=(qemu-user)

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  # scripts/install-deps.sh may have refreshed the package lists moments ago.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -n 1)" ]; then
    $sudo apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
