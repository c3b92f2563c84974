#!/usr/bin/env bash
# S2 (a full mTLS handshake per request, 32 connections) with `tls.ocsp` off and in `soft` mode
# with a warm cache (a real `openssl ocsp` responder answered once before the run), alternating,
# ROUNDS times; prints requests/s of each run and the soft/off ratio of the medians.
# The proxy is pinned to core 0 (threads: 1), the load tool and upstream to core 1, as run.sh.
#
#   benches/ocsp_s2.sh                          # release binaries from $CARGO_TARGET_DIR
#   PROFILE=debug ROUNDS=3 DURATION=10s benches/ocsp_s2.sh
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certgate-target}"
BIN="$CARGO_TARGET_DIR/${PROFILE:-release}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
WORK="$(mktemp -d /tmp/certgate-ocsp-bench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

d="$WORK/pki"
"$BIN/certgate" pki init --dir "$d" --name localhost >/dev/null
"$BIN/certgate" pki issue --dir "$d" --cn bench --org ci-tools >/dev/null
serial=$(openssl x509 -in "$d/bench.pem" -noout -serial | cut -d= -f2)
printf 'V\t491231235959Z\t\t%s\tunknown\t/CN=bench\n' "$serial" >"$d/index.txt"

UP=$(free_port)
taskset -c 1 "$BIN/certgate" echo --listen "127.0.0.1:$UP" >/dev/null 2>&1 &
PIDS+=($!)
OCSP=$(free_port)
openssl ocsp -index "$d/index.txt" -port "$OCSP" -rsigner "$d/ca.pem" -rkey "$d/ca-key.pem" \
  -CA "$d/ca.pem" -nmin 60 -ignore_err >/dev/null 2>"$WORK/ocsp.log" &
PIDS+=($!)

run() { # MODE: one S2 run, prints requests/s
  local mode=$1 listen admin conf="$WORK/certgate-$1.yaml" pid rate
  listen=$(free_port)
  admin=$(free_port)
  {
    printf 'threads: 1\nlog: { format: text, level: warn }\nadmin: { listen: 127.0.0.1:%s }\n' "$admin"
    printf 'tls:\n  cert: %s\n  key: %s\n  client_ca: %s\n  client_auth: required\n' "$d/server.pem" "$d/server-key.pem" "$d/ca.pem"
    [ "$mode" = off ] || printf '  ocsp:\n    mode: %s\n    responder: http://127.0.0.1:%s\n' "$mode" "$OCSP"
    printf 'listeners:\n  - name: bench\n    listen: 127.0.0.1:%s\n    upstream: http://127.0.0.1:%s\n' "$listen" "$UP"
  } >"$conf"
  taskset -c 0 "$BIN/certgate" run -c "$conf" >"$WORK/certgate-$mode.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
    sleep 0.1
  done
  # Warm the OCSP cache (and check the job is done: 200 with the certificate).
  code=$(curl -s -o /dev/null -w '%{http_code}' --resolve "localhost:$listen:127.0.0.1" --cacert "$d/ca.pem" \
    --cert "$d/bench.pem" --key "$d/bench-key.pem" "https://localhost:$listen/bytes/64")
  [ "$code" = 200 ] || { echo "warm-up request: $code" >&2; cat "$WORK/certgate-$mode.log" >&2; exit 1; }
  rate=$(taskset -c 1 "$BIN/certgate-load" --url "https://localhost:$listen/bytes/64" --resolve "127.0.0.1:$listen" \
    --ca "$d/ca.pem" --cert "$d/bench.pem" --key "$d/bench-key.pem" --mode new-conn --connections 32 \
    --duration "$DURATION" --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rps"]))')
  if [ "$mode" != off ]; then
    curl -s "http://127.0.0.1:$admin/metrics" | grep '^certgate_ocsp_requests_total' | tr '\n' ' ' >&2
    echo >&2
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$rate"
}

off=() soft=()
for r in $(seq "$ROUNDS"); do
  off+=("$(run off)")
  soft+=("$(run soft)")
  echo "round $r: off ${off[-1]} req/s, soft (warm cache) ${soft[-1]} req/s"
done
python3 - "${off[*]}" "${soft[*]}" <<'EOF'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
soft = [float(x) for x in sys.argv[2].split()]
mo, ms = statistics.median(off), statistics.median(soft)
print(f"S2 median: off {mo:.0f} req/s, soft+warm cache {ms:.0f} req/s, soft/off = {ms/mo:.3f}")
EOF
