#!/usr/bin/env bash
# Our STREAM receiver against the JavaScript reference STREAM receiver (ilp-protocol-stream
# 2.7.1), in one run of the reference harness: stream-sender.js pays both through the same
# JS connector (BTP, max packet amount 1000, each payment 100000 = 100 money packets, a
# fresh SPSP4 query and connection per payment, 1/10/50 connections at a time), and the
# harness reports money packets/s and the CPU milliseconds per money packet each receiver
# process spent (SPSP query, probes and close included).
#
#   bash bench/stream_receiver_vs_js.sh            # RUNS=3 by default
#   RUNS=1 bash bench/stream_receiver_vs_js.sh
#
# Needs the harness installed in .interop/ (the interop tests do that; or copy
# ../shared/interop there and run `npm ci`). Prints the harness's STREAM table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
harness="$root/.interop"
[ -d "$harness/node_modules/ilp-connector" ] || { echo "install the harness in $harness first" >&2; exit 2; }
work=$(mktemp -d -t ilp-receiver-stream-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
bin=$(dirname "$(command -v python)")
[ -x "$root/.venv/bin/ilp-receiver" ] && bin="$root/.venv/bin"
export PATH="$bin:$PATH"
export RUNS=${RUNS:-3} COUNT=${COUNT:-5000} WARMUP=${WARMUP:-200} WITH_HTTP=0 WITH_CCP=0
export WITH_PSK2=0 WITH_STREAM=1
export LOG_DIR="$work/logs"
export STREAM_CANDIDATE_CMD="ilp-receiver receive --uplink \"\$HARNESS_BTP_URL\" --port \"\$HARNESS_SPSP_PORT\" --store $work/receiver.sqlite3 --secret-file $work/receiver.secret"
bash "$harness/run-js-baseline.sh" 2>/dev/null | grep '^|' || true
