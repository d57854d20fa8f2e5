#!/usr/bin/env bash
# Our receiver against the JavaScript reference receiver, in one run of the reference
# harness: the JS sender pays both through the same JS connector (BTP, PSK2 draft-2
# requests, concurrency 1/10/50), and the harness reports packets/s and the CPU
# milliseconds per packet each receiver process spent.
#
#   bash bench/receiver_vs_js.sh            # RUNS=3 COUNT=5000 by default
#   RUNS=1 COUNT=2000 bash bench/receiver_vs_js.sh
#
# Needs the harness installed in .interop/ (the interop tests do that; or copy
# ../shared/interop there and run `npm ci`). Prints the harness's markdown table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
harness="$root/.interop"
[ -d "$harness/node_modules/ilp-connector" ] || { echo "install the harness in $harness first" >&2; exit 2; }
work=$(mktemp -d -t ilp-receiver-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bin=$(dirname "$(command -v python)")
[ -x "$root/.venv/bin/ilp-receiver" ] && bin="$root/.venv/bin"
export PATH="$bin:$PATH"
export RUNS=${RUNS:-3} COUNT=${COUNT:-5000} WARMUP=${WARMUP:-200} WITH_HTTP=${WITH_HTTP:-0} WITH_CCP=0
export LOG_DIR="$work/logs"
export CANDIDATE_CMD="ilp-receiver receive --uplink \"\$HARNESS_BTP_URL\" --port \"\$HARNESS_SPSP_PORT\" --store $work/receiver.sqlite3 --secret-file $work/receiver.secret"
bash "$harness/run-js-baseline.sh" 2>/dev/null | grep '^|' || true
