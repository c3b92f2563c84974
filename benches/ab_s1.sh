#!/usr/bin/env bash
# A/B of two certgate binaries on the same job as benches/run.sh (same PKI, policy, config,
# echo upstream), for a change to the request path. Two measures, because this machine has two
# cores and other work may run on it:
#   1. req/s, p99 and proxy CPU per request with certgate-load (proxy pinned to core 0, load and
#      upstream to core 1), PAIRS interleaved pairs base/fast per scenario;
#   2. instructions per request under callgrind (repeatable whatever else runs): two loads of
#      different lengths through the proxy under valgrind, counters zeroed before each, so the
#      32 handshakes cancel out: (Ir_long - Ir_short) / (requests_long - requests_short).
#
#   benches/ab_s1.sh                                  # S1 pairs, then callgrind
#   BASE=/work/bin/certgate-base FAST=/work/bin/certgate-fast LOAD=.../certgate-load benches/ab_s1.sh
#   SCENARIOS="S1 S3 S4" PAIRS=3 CALLGRIND=0 benches/ab_s1.sh
#   SCENARIOS=S5 CALLGRIND_SCENARIOS=S5 benches/ab_s1.sh   # HTTP/2: 32 streams, one connection
#   SCENARIOS="S2 S6" CALLGRIND=0 benches/ab_s1.sh           # handshakes; KiB per idle connection
# Knobs: DURATION (5s), PAIRS (3), SCENARIOS (S1), CALLGRIND (1), CALLGRIND_SCENARIOS (S1; S1
# and S5 are known), TRANSFER_BYTES (1 GiB), UPSTREAM_ADDR (127.0.0.1:18080), PROXY_ADDR
# (127.0.0.1:18443). Prints one line per run and a summary; raw JSON lines go to
# $WORK/ab.jsonl (WORK is printed).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BASE="${BASE:-/work/bin/certgate-base}"
FAST="${FAST:-/work/bin/certgate-fast}"
LOAD="${LOAD:-${CARGO_TARGET_DIR:-$HOME/.cache/certgate-target}/release/certgate-load}"
DURATION="${DURATION:-5s}"
PAIRS="${PAIRS:-3}"
SCENARIOS="${SCENARIOS:-S1}"
CALLGRIND="${CALLGRIND:-1}"
CALLGRIND_SCENARIOS="${CALLGRIND_SCENARIOS:-S1}"
TRANSFER_BYTES="${TRANSFER_BYTES:-1073741824}"
UPSTREAM="${UPSTREAM_ADDR:-127.0.0.1:18080}"
LISTEN="${PROXY_ADDR:-127.0.0.1:18443}"
WORK="$(mktemp -d /tmp/certgate-ab.XXXXXX)"
OUT="$WORK/ab.jsonl"
PIDS=()
PROXY_PID=""

cleanup() {
  [ -z "$PROXY_PID" ] || kill "$PROXY_PID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in "$BASE" "$FAST" "$LOAD"; do
  [ -x "$b" ] || { echo "missing binary: $b" >&2; exit 1; }
done
echo "work dir: $WORK" >&2

# --- PKI, policy and config, as benches/run.sh makes them (ECDSA server key) ---------------
d="$WORK/pki"
"$BASE" pki init --dir "$d" --org bench >/dev/null
"$BASE" pki issue --dir "$d" --cn bench --org ci-tools >/dev/null
"$BASE" pki issue --dir "$d" --cn revoked --org ci-tools >/dev/null
"$BASE" pki revoke --dir "$d" --cert "$d/revoked.pem" >/dev/null
cat >"$WORK/policy.yaml" <<'EOF'
permissions:
  bench: ["GET /bytes/{n}", "POST /upload", "GET /anything"]
groups:
  ci-tools: [bench]
EOF
sed -e "s|@CERT@|$d/server.pem|g" -e "s|@KEY@|$d/server-key.pem|g" -e "s|@CA@|$d/ca.pem|g" \
  -e "s|@CRL@|$d/crl.pem|g" -e "s|@POLICY@|$WORK/policy.yaml|g" -e "s|@LISTEN@|$LISTEN|g" \
  -e "s|@UPSTREAM@|$UPSTREAM|g" "$HERE/peers/certgate.yaml" >"$WORK/certgate.yaml"
"$BASE" check -c "$WORK/certgate.yaml" >/dev/null

port=${LISTEN##*:}
TLS=(--resolve "$LISTEN" --ca "$d/ca.pem" --cert "$d/bench.pem" --key "$d/bench-key.pem")
URL="https://localhost:$port"

wait_http() { # URL [curl args...]: poll until 2xx, 60 s deadline (valgrind starts slowly)
  local url=$1 deadline=$((SECONDS + 60))
  shift
  until curl -fsS -o /dev/null --max-time 5 "$@" "$url" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "no answer from $url" >&2; return 1; }
    sleep 0.1
  done
}
ready() { wait_http "$URL/bytes/1" --resolve "localhost:$port:127.0.0.1" --cacert "$d/ca.pem" \
  --cert "$d/bench.pem" --key "$d/bench-key.pem"; }

taskset -c 1 "$BASE" echo --listen "$UPSTREAM" >"$WORK/echo.log" 2>&1 &
PIDS+=($!)
wait_http "http://$UPSTREAM/bytes/1"

start_proxy() { # BINARY [wrapper...]
  local bin=$1
  shift
  taskset -c 0 "$@" "$bin" run -c "$WORK/certgate.yaml" >"$WORK/proxy.log" 2>&1 &
  PROXY_PID=$!
  ready
}
stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
}
ticks() { awk '{print $14 + $15}' "/proc/$PROXY_PID/stat"; }

scenario_args() { # SCENARIO: URL and certgate-load arguments
  case $1 in
  S1) echo "$URL/bytes/64 --mode keepalive --connections 32 --duration $DURATION" ;;
  S5) echo "$URL/bytes/64 --mode http2 --connections 32 --duration $DURATION" ;;
  S2) echo "$URL/bytes/64 --mode new-conn --connections 32 --duration $DURATION" ;;
  S3) echo "$URL/bytes/$TRANSFER_BYTES --mode download" ;;
  S4) echo "$URL/upload --mode upload --bytes $TRANSFER_BYTES" ;;
  *) echo "unknown scenario $1" >&2; exit 1 ;;
  esac
}

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$PROXY_PID/status"; }

idle_run() { # WHO BINARY: S6, KiB of RSS per idle mTLS keep-alive connection (1,000 held)
  local who=$1 bin=$2 idle with held ready="$WORK/ready" deadline
  start_proxy "$bin"
  idle=$(rss_kib)
  rm -f "$ready"
  taskset -c 1 "$LOAD" --url "$URL/bytes/64" "${TLS[@]}" --json --mode idle --connections 1000 \
    --duration 5s --ready-file "$ready" >/dev/null 2>&1 &
  local load=$!
  deadline=$((SECONDS + 120))
  until [ -s "$ready" ] || [ $SECONDS -ge $deadline ] || ! kill -0 "$load" 2>/dev/null; do sleep 0.05; done
  with=$(rss_kib)
  held=$(tr -cd '0-9' <"$ready" 2>/dev/null || echo 0)
  wait "$load" || true
  stop_proxy
  printf '{"who":"%s","scenario":"S6","rss_idle_kib":%s,"rss_with_kib":%s,"held":%s}\n' "$who" "$idle" "$with" "${held:-0}" >>"$OUT"
  echo "  $who S6: idle $idle KiB, with ${held:-0} idle connections $with KiB" >&2
}

one_run() { # WHO BINARY SCENARIO
  local who=$1 bin=$2 sc=$3 args before after out hz
  if [ "$sc" = S6 ]; then
    idle_run "$who" "$bin"
    return
  fi
  read -r -a args <<<"$(scenario_args "$sc")"
  start_proxy "$bin"
  before=$(ticks)
  out=$(taskset -c 1 "$LOAD" --url "${args[0]}" "${TLS[@]}" --json "${args[@]:1}")
  after=$(ticks)
  stop_proxy
  hz=$(getconf CLK_TCK)
  printf '{"who":"%s","scenario":"%s","proxy_cpu_s":%s,"load":%s}\n' "$who" "$sc" \
    "$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN{print t/hz}')" "$out" >>"$OUT"
  echo "  $who $sc: $(echo "$out" | cut -c1-160), proxy CPU $(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN{print t/hz}') s" >&2
}

for sc in $SCENARIOS; do
  for i in $(seq 1 "$PAIRS"); do
    one_run base "$BASE" "$sc"
    one_run fast "$FAST" "$sc"
  done
done

# --- callgrind: instructions per request (S1: HTTP/1.1 keep-alive; S5: HTTP/2 streams) ------
callgrind_ir() { # WHO BINARY SCENARIO: prints "WHO instructions/request" from loads of 4 s and 12 s
  local who=$1 bin=$2 sc=$3 n ir i mode
  case $sc in
  S1) mode=keepalive ;;
  S5) mode=http2 ;;
  *) echo "no callgrind run for $sc" >&2; exit 1 ;;
  esac
  start_proxy "$bin" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$who-$sc.%p" -q
  local res=() k=0
  for dur in 4s 12s; do
    k=$((k + 1))
    callgrind_control -z "$PROXY_PID" >/dev/null
    n=$(taskset -c 1 "$LOAD" --url "$URL/bytes/64" "${TLS[@]}" --json --mode "$mode" --connections 32 --duration "$dur" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
    callgrind_control -d "$PROXY_PID" >/dev/null
    # Dump k of this process is cg-WHO-SCENARIO.PID.k; its `totals:` line is every instruction since the zeroing.
    ir=$(awk '/^(totals|summary):/{print $2; exit}' "$WORK/cg-$who-$sc.$PROXY_PID.$k")
    res+=("$n" "$ir")
    echo "  callgrind $who $dur: $n requests, $ir instructions" >&2
  done
  stop_proxy
  i=$(awk -v n1="${res[0]}" -v i1="${res[1]}" -v n2="${res[2]}" -v i2="${res[3]}" 'BEGIN{printf "%.0f", (i2-i1)/(n2-n1)}')
  printf '{"who":"%s","scenario":"%s-callgrind","requests_short":%s,"ir_short":%s,"requests_long":%s,"ir_long":%s,"ir_per_request":%s}\n' \
    "$who" "$sc" "${res[0]}" "${res[1]}" "${res[2]}" "${res[3]}" "$i" >>"$OUT"
  echo "  callgrind $who $sc: $i instructions per request" >&2
}
if [ "$CALLGRIND" = 1 ]; then
  for sc in $CALLGRIND_SCENARIOS; do
    callgrind_ir base "$BASE" "$sc"
    callgrind_ir fast "$FAST" "$sc"
  done
fi

python3 - "$OUT" <<'EOF'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
for sc in sorted({r["scenario"] for r in rows}):
    for who in ("base", "fast"):
        rs = [r for r in rows if r["scenario"] == sc and r["who"] == who]
        if not rs:
            continue
        if sc.endswith("callgrind"):
            print(f"{sc} {who}: {rs[0]['ir_per_request']:,} instructions/request")
            continue
        if sc == "S6":
            kib = [(r["rss_with_kib"] - r["rss_idle_kib"]) / max(r["held"], 1) for r in rs]
            print(f"S6 {who}: KiB per idle connection median {st.median(kib):.2f} (runs {', '.join(f'{x:.2f}' for x in kib)})")
            continue
        rps = [r["load"]["rps"] for r in rs]
        p99 = [r["load"]["p99_ms"] for r in rs]
        mbs = [r["load"]["mb_per_s"] for r in rs]
        cpu = [r["proxy_cpu_s"] * 1e6 / max(r["load"]["requests"], 1) for r in rs]
        gib = [r["proxy_cpu_s"] / max(r["load"]["bytes"] / 2**30, 1e-9) for r in rs]
        if sc in ("S1", "S2", "S5"):
            print(f"{sc} {who}: req/s median {st.median(rps):,.0f} (runs {', '.join(f'{x:,.0f}' for x in rps)}), "
                  f"p99 median {st.median(p99):.2f} ms, proxy CPU/request median {st.median(cpu):.1f} us")
        else:
            print(f"{sc} {who}: MB/s median {st.median(mbs):,.0f} (runs {', '.join(f'{x:,.0f}' for x in mbs)}), "
                  f"proxy CPU per GiB median {st.median(gib):.2f} s")
EOF
