#!/usr/bin/env bash
# The suites that need real Bitcoin Core: builds bitcoind and bitcoin-cli on first use (see
# scripts/bitcoind.sh; about 11 minutes on 2 cores, cached afterwards), then runs
#   1. the chain and CLI tests with the real binaries at hand (BitcoindRpc against real bitcoind,
#      bitcoin-cli against chaind, chaind as a separate process),
#   2. the chain and client scenarios on real bitcoind through BitcoindRpc,
#   3. the same scenarios on the embedded chain with real bitcoind judging every transaction,
#      package and block too (the differential check), and prints its counts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-debian.sh
bin="$(./scripts/bitcoind.sh | tail -1)"
export SUPERSCALAR_BITCOIND_BIN="$bin" SUPERSCALAR_REQUIRE_BITCOIND=1

echo "== 1. chain and CLI tests with real bitcoind and bitcoin-cli ($bin)"
cargo test --locked -p superscalar-chain -p superscalar-cli "$@"

echo "== 2. chain and client scenarios on real bitcoind"
SUPERSCALAR_TEST_CHAIN=bitcoind cargo test --locked -p superscalar-chain -p superscalar-client --tests "$@"

echo "== 3. differential check: every verdict of our mempool and kernel against real bitcoind's"
log="$(mktemp)"
SUPERSCALAR_TEST_CHAIN=differential SUPERSCALAR_DIFF_LOG="$log" \
  cargo test --locked -p superscalar-chain -p superscalar-client --tests "$@"
compared=$(grep -c '"agreed"' "$log" || true)
agreed=$(grep -c '"agreed":true' "$log" || true)
echo "differential check: $compared verdicts compared, $agreed agreed, $((compared - agreed)) differ"
for kind in tx package block; do
  n=$(grep -c "\"kind\":\"$kind\"" "$log" || true)
  a=$(grep "\"kind\":\"$kind\"" "$log" | grep -c '"agreed":true' || true)
  echo "  ${kind}s: $n compared, $a agreed"
done
unlisted=0
while IFS= read -r pair; do
  count=$(grep -F "\"pair\":\"$pair\"" "$log" | grep -c '"agreed":false' || true)
  if grep -qxF "$pair" scripts/known-differences.txt; then
    echo "  listed in the README: $pair ($count)"
  else
    echo "  NOT LISTED: $pair ($count), e.g.:"
    grep -F "\"pair\":\"$pair\"" "$log" | grep '"agreed":false' | head -2 | sed 's/^/    /'
    unlisted=1
  fi
done < <(grep '"agreed":false' "$log" | sed 's/.*"pair":"\([^"]*\)".*/\1/' | sort -u)
rm -f "$log"
[ "$compared" -gt 0 ] || { echo "the differential check compared nothing" >&2; exit 1; }
exit "$unlisted"
