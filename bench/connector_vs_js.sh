#!/usr/bin/env bash
# Connector benchmark: JS sender -> CONNECTOR -> JS receiver, where CONNECTOR is
#   (1) our bundled connector (ilp-receiver connector), and
#   (2) the JS reference ilp-connector 23.0.2 (.interop/connector.js),
# at concurrency 10 and 50 (sender.js bench), RUNS runs each, with the CPU ticks of the
# connector and receiver processes from /proc/PID/stat (as run-js-baseline.sh does).
#
#   bench/connector_vs_js.sh            # RUNS=3 COUNT=5000 WARMUP=200 BASE_PORT=20750
#
# Prints one JSON line per run on stdout; logs go to a mktemp dir (printed on stderr).
# Every process it starts is stopped by PID, also on Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${HARNESS:-$HERE/.interop}
RUNS=${RUNS:-3}
COUNT=${COUNT:-5000}
WARMUP=${WARMUP:-200}
AMOUNT=${AMOUNT:-1000}
MAX_SECONDS=${MAX_SECONDS:-60}
BASE=${BASE_PORT:-20750}
ILP=${ILP_RECEIVER:-$HERE/.venv/bin/ilp-receiver}
LOG_DIR=$(mktemp -d)
echo "# logs in $LOG_DIR" >&2
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
unset "${!HARNESS_@}" 2>/dev/null || true

ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo -1; }
wait_ready() { # FILE
  for _ in $(seq 1 150); do grep -q '"event": *"ready"' "$1" 2>/dev/null && return 0; sleep 0.2; done
  echo "not ready: $1" >&2; return 1
}

run_setup() { # NAME SENDER_PORT CHILD_PORT SPSP_PORT CONNECTOR_PID
  local name=$1 sport=$2 cport=$3 spsp=$4 cpid=$5
  (cd "$HARNESS" && exec node js-receiver.js --btp-url "btp+ws://benchrecv:tok@127.0.0.1:$cport" \
     --spsp-port "$spsp" >"$LOG_DIR/$name-recv.out" 2>"$LOG_DIR/$name-recv.err") &
  local rpid=$!; PIDS+=("$rpid")
  wait_ready "$LOG_DIR/$name-recv.out"
  for conc in 10 50; do
    for run in $(seq 1 "$RUNS"); do
      local c0 r0 c1 r1 out
      c0=$(ticks "$cpid"); r0=$(ticks "$rpid")
      out=$(cd "$HARNESS" && node sender.js bench --receiver "http://127.0.0.1:$spsp/.well-known/pay" \
        --btp-url "btp+ws://:sender-token@127.0.0.1:$sport" --count "$COUNT" --warmup "$WARMUP" \
        --concurrency "$conc" --amount "$AMOUNT" --max-seconds "$MAX_SECONDS" 2>>"$LOG_DIR/$name-sender.err" || true)
      c1=$(ticks "$cpid"); r1=$(ticks "$rpid")
      node -e '
        const [out, name, conc, run, c0, c1, r0, r1, tck] = process.argv.slice(1)
        const r = JSON.parse(out); const n = (r.warmup ? r.warmup.fulfilled : 0) + (r.fulfilled || 0) + (r.rejected || 0)
        const per = (a, b) => n > 0 ? Math.round((b - a) * 1000 / Number(tck) / n * 1000) / 1000 : null
        console.log(JSON.stringify({ connector: name, concurrency: Number(conc), run: Number(run), ok: r.ok,
          packets_per_s: r.packets_per_s, p50_ms: r.latency_ms && r.latency_ms.p50, p99_ms: r.latency_ms && r.latency_ms.p99,
          fulfilled: r.fulfilled, rejected: r.rejected, connector_cpu_ms_per_packet: per(c0, c1),
          receiver_cpu_ms_per_packet: per(r0, r1) }))' \
        "$out" "$name" "$conc" "$run" "$c0" "$c1" "$r0" "$r1" "$(getconf CLK_TCK)"
    done
  done
  kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
}

# (1) ours
cat >"$LOG_DIR/ours.toml" <<EOF
[connector]
address = "test.pyconn"
store = "$LOG_DIR/ours.sqlite3"
[accounts.sender]
relation = "child"
transport = "btp-server"
token = "sender-token"
listen = "127.0.0.1:$BASE"
[accounts.kids]
relation = "child"
transport = "mini-accounts"
listen = "127.0.0.1:$((BASE + 1))"
EOF
"$ILP" connector --config "$LOG_DIR/ours.toml" >"$LOG_DIR/ours.out" 2>"$LOG_DIR/ours.err" &
OURS=$!; PIDS+=("$OURS")
wait_ready "$LOG_DIR/ours.out"
run_setup ours "$BASE" "$((BASE + 1))" "$((BASE + 2))" "$OURS"
kill "$OURS"; wait "$OURS" 2>/dev/null || true

# (2) the JS reference connector
(cd "$HARNESS" && exec node connector.js --sender-port "$((BASE + 3))" --receivers-port "$((BASE + 4))" \
   >"$LOG_DIR/js.out" 2>"$LOG_DIR/js.err") &
JS=$!; PIDS+=("$JS")
wait_ready "$LOG_DIR/js.out"
run_setup ilp-connector "$((BASE + 3))" "$((BASE + 4))" "$((BASE + 5))" "$JS"
