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

cat >"$WORK/per_request.py" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
seconds = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f"{r['rps']:.0f} {1e6 * seconds / max(r['requests'], 1):.0f}")
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # MODE: one S2 run, prints "requests/s cpu-us-per-handshake"
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
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 "$BIN/certgate-load" --url "https://localhost:$listen/bytes/64" --resolve "127.0.0.1:$listen" \
    --ca "$d/ca.pem" --cert "$d/bench.pem" --key "$d/bench-key.pem" --mode new-conn --connections 32 \
    --duration "$DURATION" --json)
  after=$(cpu_ticks "$pid")
  # requests/s, and the proxy's CPU microseconds per handshake (steadier than the rate when
  # other work shares the machine).
  rate=$(python3 "$WORK/per_request.py" "$out" "$before" "$after" "$(getconf CLK_TCK)")
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
  o=$(run off)
  s=$(run soft)
  off+=("$o")
  soft+=("$s")
  echo "round $r: off ${o% *} req/s (${o#* } CPU us/handshake), soft with a warm cache ${s% *} req/s (${s#* } CPU us/handshake)"
done
python3 - "${off[*]}" "${soft[*]}" <<'EOF'
import statistics, sys
def split(arg):
    v = [float(x) for x in arg.split()]
    return v[0::2], v[1::2]
(off_rps, off_cpu), (soft_rps, soft_cpu) = split(sys.argv[1]), split(sys.argv[2])
mo, ms = statistics.median(off_rps), statistics.median(soft_rps)
co, cs = statistics.median(off_cpu), statistics.median(soft_cpu)
print(f"S2 median: off {mo:.0f} req/s, soft+warm cache {ms:.0f} req/s, soft/off = {ms/mo:.3f}")
print(f"proxy CPU per handshake: off {co:.0f} us, soft+warm cache {cs:.0f} us, soft/off = {cs/co:.3f}")
EOF
