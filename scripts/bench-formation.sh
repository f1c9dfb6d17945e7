#!/usr/bin/env bash
# Benchmark of factory formation over loopback, every party its own OS process: `superscalar
# chaind`, the LSP (`lsp run --min-clients N --max-clients N --round-timeout 120`, default factory
# shape), its wallet funded by mining to it, then the clients: for each N of SIZES one
# `client swarm --count N` process (N clients in one process, each its own seed, store, BOLT-8
# connection and node id), and once PROCS `client run` processes (one a client).
#
# For each run it prints: the wall time from the LSP's formation start (its log line "formation
# starts") to the last client signed (every final signature of its exit path verified, from the
# swarm's report or each client's log), the LSP's own time from formation start to signed (its
# log), bytes received per client (swarm only: encoded messages plus their 2-byte type, BOLT-8
# framing excluded), and peak RSS (VmHWM, read from /proc just before each process stops): the
# LSP's, the swarm process's, or the sum over the client processes.
#
# Usage: scripts/bench-formation.sh [BINARY]          (default target/release/superscalar)
#   SIZES="64 127 1024"   swarm sizes
#   PROCS=64              clients of the process-per-client run (0: skip it)
#   CAPACITY_SAT=100000   each client's channel
#   BLOCKS=110            blocks mined to each LSP's wallet (100 to mature, the rest spendable)
#   ROUND_TIMEOUT=120     the LSP's --round-timeout (s)
#   SWARM_ARGS=           more arguments for `client swarm` (e.g. --no-shared-aggregates)
#   KEEP=1                keep the work directory (logs, stores)
# Needs: Linux (/proc), curl, GNU date and awk.
set -euo pipefail

BIN=${1:-target/release/superscalar}
SIZES=${SIZES-64 127 1024}
PROCS=${PROCS-64}
CAPACITY=${CAPACITY_SAT:-100000}
BLOCKS=${BLOCKS:-110}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-120}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-formation.XXXXXX")
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

die() { echo "bench-formation: $*" >&2; exit 1; }

# wait_line FILE REGEX SECONDS: prints the first line of FILE matching REGEX, once there is one.
wait_line() {
    local end=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$end" ]; do
        if [ -f "$1" ] && grep -m1 -E "$2" "$1"; then return 0; fi
        sleep 0.1
    done
    die "no line matching '$2' in $1 within $3 s"
}

# log_time FILE REGEX [first|last]: the unix time (s) of the first or last log line matching REGEX.
log_time() {
    local line
    if [ "${3:-first}" = first ]; then
        line=$(grep -m1 -E "$2" "$1") || die "no '$2' in $1"
    else
        line=$(grep -E "$2" "$1" | tail -n1) || die "no '$2' in $1"
    fi
    date -d "${line%% *}" +%s.%N
}

vmhwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# pss_kb PID: the process's proportional set size now (pages shared with N processes count 1/N).
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
# cpu_s PID: the process's user and system CPU time so far, in seconds.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
field() { grep -m1 "^$2: " "$1" | sed "s/^$2: //"; }

[ -x "$BIN" ] || die "no binary at $BIN (cargo build --release -p superscalar-cli)"

# The chain.
# Every client process, the LSP and the swarm hold a keep-alive connection to it.
"$BIN" chaind --rpc-bind 127.0.0.1:0 --rpc-max-connections $((PROCS + 64)) --datadir "$WORK/chain" >"$WORK/chain.out" 2>"$WORK/chain.err" &
PIDS+=($!)
CHAIN_ADDR=$(wait_line "$WORK/chain.out" '^chaind listening on ' 60 | sed 's/^chaind listening on //')
COOKIE=$(wait_line "$WORK/chain.out" '^chaind cookie at ' 60 | sed 's/^chaind cookie at //')
URL="http://$CHAIN_ADDR/"

rpc() {
    curl -sf --user "$(cat "$COOKIE")" -H 'content-type: application/json' \
        --data-binary "{\"jsonrpc\":\"1.0\",\"id\":0,\"method\":\"$1\",\"params\":$2}" "$URL" \
        || die "RPC $1 failed"
}

CHAIN=(--chain-rpc "$URL" --chain-cookie "$COOKIE" --no-passphrase)

# start_lsp DIR N: starts an LSP forming factories of exactly N clients, funds its wallet; sets
# LSP_PID, LSP_URI, LSP_API.
start_lsp() {
    mkdir -p "$1"
    "$BIN" lsp run --datadir "$1/lsp" --listen 127.0.0.1:0 --api 127.0.0.1:0 "${CHAIN[@]}" \
        --min-clients "$2" --max-clients "$2" --round-timeout "$ROUND_TIMEOUT" >"$1/lsp.out" 2>/dev/null &
    LSP_PID=$!
    PIDS+=("$LSP_PID")
    local line
    line=$(wait_line "$1/lsp.out" '^lsp ' 60)
    LSP_URI=$(echo "$line" | awk '{print $2}')
    LSP_API=$(echo "$line" | awk '{print $4}')
    local address
    address=$("$BIN" lsp newaddress --datadir "$1/lsp" --api "$LSP_API")
    rpc generatetoaddress "[$BLOCKS, \"$address\"]" >/dev/null
}

# stop_lsp DIR: sets LSP_KB (its VmHWM), LSP_PSS_KB and LSP_CPU (s), then stops the LSP.
stop_lsp() {
    LSP_KB=$(vmhwm_kb "$LSP_PID")
    LSP_PSS_KB=$(pss_kb "$LSP_PID")
    LSP_CPU=$(cpu_s "$LSP_PID")
    "$BIN" lsp stop --datadir "$1/lsp" --api "$LSP_API" >/dev/null
    wait "$LSP_PID" 2>/dev/null || true
}

# lsp_times DIR: "<attempts> <formation start> <LSP signed> <funding sat>" from the LSP's log.
lsp_times() {
    local log="$1/lsp/debug.log"
    wait_line "$log" 'signed; funding' 60 >/dev/null
    local attempts funding
    attempts=$(grep -c 'formation starts with' "$log")
    funding=$(grep -E 'forming factory .* with [0-9]+ clients' "$log" | tail -n1 |
        sed -E 's/.*\(funding ([0-9]+) sat\).*/\1/')
    echo "$attempts $(log_time "$log" 'formation starts with') $(log_time "$log" 'signed; funding' last) $funding"
}

ROWS=()
row() { ROWS+=("$(printf '%-14s %5s %3s %8s %7s %8s %8s %8s %7s %7s %8s %8s' "$@")"); }
row mode N try "wall s" "LSP s" "BTC" "B mean" "B max" "LSP MB" "LSP cpu" "cli MB" "cli cpu"
btc() { awk -v s="$1" 'BEGIN {printf "%.4f", s / 1e8}'; }

for n in $SIZES; do
    dir="$WORK/swarm-$n"
    start_lsp "$dir" "$n"
    if ! "$BIN" client swarm --count "$n" --lsp "$LSP_URI" --datadir "$dir/swarm" "${CHAIN[@]}" \
        --capacity-sat "$CAPACITY" --timeout 900 ${SWARM_ARGS:-} >"$dir/swarm.out" 2>/dev/null; then
        cat "$dir/swarm.out" >&2
        tail -n 20 "$dir/lsp/debug.log" >&2
        die "the swarm of $n did not sign"
    fi
    read -r attempts start lsp_signed funding < <(lsp_times "$dir")
    last=$(field "$dir/swarm.out" 'last signed unix s')
    stop_lsp "$dir"
    row swarm "$n" "$attempts" "$(diff_s "$start" "$last")" "$(diff_s "$start" "$lsp_signed")" \
        "$(btc "$funding")" \
        "$(field "$dir/swarm.out" 'bytes received per client, mean')" \
        "$(field "$dir/swarm.out" 'bytes received per client, max')" \
        "$(mb "$LSP_KB")" "$LSP_CPU" "$(mb "$(field "$dir/swarm.out" 'peak RSS kB')")" \
        "$(field "$dir/swarm.out" 'process CPU s')"
    echo "${ROWS[-1]}" >&2
done

if [ "$PROCS" -gt 0 ]; then
    dir="$WORK/procs-$PROCS"
    start_lsp "$dir" "$PROCS"
    CLIENT_PIDS=()
    for i in $(seq 0 $((PROCS - 1))); do
        "$BIN" client run --datadir "$dir/client-$i" --lsp "$LSP_URI" --api 127.0.0.1:0 \
            "${CHAIN[@]}" --capacity-sat "$CAPACITY" >/dev/null 2>&1 &
        CLIENT_PIDS+=($!)
        PIDS+=($!)
    done
    signed_re='every signature of our exit path and timeouts verified'
    end=$((SECONDS + 900))
    while :; do
        done_count=$({ grep -l "$signed_re" "$dir"/client-*/debug.log 2>/dev/null || true; } | wc -l)
        [ "$done_count" -ge "$PROCS" ] && break
        [ "$SECONDS" -lt "$end" ] || die "only $done_count of $PROCS client processes signed"
        sleep 0.2
    done
    read -r attempts start lsp_signed funding < <(lsp_times "$dir")
    last=0
    for i in $(seq 0 $((PROCS - 1))); do
        t=$(log_time "$dir/client-$i/debug.log" "$signed_re" last)
        last=$(awk -v a="$last" -v b="$t" 'BEGIN {print (b > a) ? b : a}')
    done
    clients_kb=0
    clients_pss_kb=0
    clients_cpu=0
    for p in "${CLIENT_PIDS[@]}"; do
        clients_kb=$((clients_kb + $(vmhwm_kb "$p")))
        clients_pss_kb=$((clients_pss_kb + $(pss_kb "$p")))
        clients_cpu=$(awk -v a="$clients_cpu" -v b="$(cpu_s "$p")" 'BEGIN {printf "%.2f", a + b}')
    done
    # PSS is read with every process still alive, so that shared pages are split among them all.
    stop_lsp "$dir"
    kill "${CLIENT_PIDS[@]}" 2>/dev/null || true
    row "process/client" "$PROCS" "$attempts" "$(diff_s "$start" "$last")" \
        "$(diff_s "$start" "$lsp_signed")" "$(btc "$funding")" - - \
        "$(mb "$LSP_KB")" "$LSP_CPU" "$(mb "$clients_kb")" "$clients_cpu"
    echo "${ROWS[-1]}" >&2
    SUMMED="process/client N=$PROCS: VmHWM of the $PROCS client processes summed: $(mb "$clients_kb") MB, with the LSP's: $(mb $((clients_kb + LSP_KB))) MB
  (VmHWM counts the pages of the shared binary in every process; PSS, which splits them among
  the processes, summed over the clients just before they stop: $(mb "$clients_pss_kb") MB, with the LSP's: $(mb $((clients_pss_kb + LSP_PSS_KB))) MB)"
fi

echo
echo "factory formation over loopback: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $BIN"
echo "each client asks for $CAPACITY sat; $BLOCKS blocks mined to each LSP; LSP --round-timeout $ROUND_TIMEOUT"
echo "try: formations started (1 = none aborted); wall s: LSP formation start -> last client signed;"
echo "LSP s: formation start -> LSP signed; BTC: the factory's funding output;"
echo "B mean, B max: bytes received per client (protocol messages: encoding + 2-byte type; BOLT-8"
echo "framing, 34 bytes a message, not counted); MB: peak RSS (VmHWM); cpu: CPU seconds (user + system)"
echo "over the process's life; cli: the swarm process, or the client processes summed"
printf '%s\n' "${ROWS[@]}"
[ -z "${SUMMED:-}" ] || echo "$SUMMED"
