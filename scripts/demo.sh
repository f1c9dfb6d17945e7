#!/usr/bin/env bash
# Set up (first run only) and run the end-to-end demo on the embedded regtest chain.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-debian.sh
exec cargo run --locked -p superscalar-cli -- demo "$@"
