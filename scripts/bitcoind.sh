#!/usr/bin/env bash
# Build Bitcoin Core's `bitcoind` and `bitcoin-cli` once, from the Bitcoin Core source tree that the
# `libbitcoinkernel-sys` crate ships (the same sources as our embedded consensus engine), into a
# cache directory reused across runs. Nothing is downloaded but the crate itself (from crates.io).
#
# The last line of output is the directory that holds the two binaries.
#
#   BITCOIND_CACHE   where builds are kept (default /var/cache/superscalar-rs/bitcoind)
#   BITCOIND_JOBS    parallel compile jobs (default: number of cores)
set -euo pipefail
cd "$(dirname "$0")/.."

# Build tools and Bitcoin Core's one extra library for the daemon (libevent).
source scripts/setup-debian.sh
if ! dpkg-query -W -f='${Status}' libevent-dev 2>/dev/null | grep -q "install ok installed"; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: libevent-dev" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libevent-dev
fi

# The Bitcoin Core sources, from the locked `libbitcoinkernel-sys` crate (fetched if missing).
version="$(awk '/^name = "libbitcoinkernel-sys"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)"
[ -n "$version" ] || { echo "libbitcoinkernel-sys is not in Cargo.lock" >&2; exit 1; }
cargo fetch --locked >&2
crate_dir="$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d \
  -name "libbitcoinkernel-sys-$version" | head -1)"
[ -n "$crate_dir" ] || { echo "libbitcoinkernel-sys-$version not found in the cargo registry" >&2; exit 1; }
manifest="$crate_dir/Cargo.toml"
src="$crate_dir/bitcoin"
[ -f "$src/CMakeLists.txt" ] || { echo "no Bitcoin Core sources at $src" >&2; exit 1; }

# One build per source tree: the cache key is the crate's version directory name.
cache="${BITCOIND_CACHE:-/var/cache/superscalar-rs/bitcoind}"
key="$(basename "$(dirname "$manifest")")"
build="$cache/$key"
bin="$build/bin"
if [ -x "$bin/bitcoind" ] && [ -x "$bin/bitcoin-cli" ]; then
  echo "bitcoind already built from $key" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$build"
jobs="${BITCOIND_JOBS:-$(nproc)}"
echo "building bitcoind and bitcoin-cli from $src into $build ($jobs jobs; about 11 minutes on 2 cores)" >&2
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_FUZZ_BINARY=OFF -DENABLE_WALLET=OFF -DBUILD_GUI=OFF \
  -DWITH_ZMQ=OFF -DENABLE_IPC=OFF -DWITH_EMBEDDED_ASMAP=OFF \
  -DBUILD_DAEMON=ON -DBUILD_CLI=ON -DBUILD_BITCOIN_BIN=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF \
  -DBUILD_WALLET_TOOL=OFF -DENABLE_EXTERNAL_SIGNER=OFF -DBUILD_KERNEL_LIB=OFF >&2
cmake --build "$build" -j"$jobs" --target bitcoind bitcoin-cli >&2
"$bin/bitcoind" -version | head -1 >&2
echo "$bin"
