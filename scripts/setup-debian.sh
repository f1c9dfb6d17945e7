#!/usr/bin/env bash
# Install what the build needs on Debian (idempotent, non-interactive): a C/C++ toolchain, cmake and
# Boost headers for Bitcoin Core's libbitcoinkernel, which the `bitcoinkernel` crate compiles.
set -euo pipefail

packages=(build-essential cmake libboost-dev pkg-config git ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "installing: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || {
  echo "cargo not found: install a Rust toolchain (1.80 or newer, e.g. with rustup) and retry" >&2
  exit 1
}
