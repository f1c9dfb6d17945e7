#!/usr/bin/env bash
# Set up (first run only) and run the end-to-end demo: chaind, one LSP and 8 client daemons as
# separate processes on loopback (`--in-process`: the whole protocol in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-debian.sh
exec cargo run --locked -p superscalar-cli -- demo "$@"
