#!/usr/bin/env bash
# certgate side by side with NGINX, HAProxy and Caddy (Debian packages), doing the same mTLS job
# against the same plain-HTTP upstream, on this machine:
#   - the proxy under test pinned to core 0 (one worker / thread / GOMAXPROCS=1),
#   - the load tool (certgate-load) and the upstream (certgate echo) pinned to core 1,
#   - contestants one after another, each through every scenario (S6, S1, S2, S2r, S5, S3, S4),
#     then the RSA server key for S2; ROUNDS repeats the whole sequence (best round is kept).
# Results: benches/results/ (raw JSON lines, openssl speed, machine), benches/results.md and the "Latest results" section of
# benches/README.md (tables and ratios, written by benches/report.py).
#
#   benches/run.sh                      # everything, ~10 minutes
#   DURATION=5s ROUNDS=2 ONLY="certgate nginx" benches/run.sh
#   DURATION=2s OUT=/tmp/trial benches/run.sh   # a trial: benches/ itself is left alone
# Other knobs: TRANSFER_BYTES (S3/S4, default 1 GiB), IDLE_CONNECTIONS (S6, 1000), LOAD_TIMEOUT (300 s),
# UPSTREAM_ADDR (127.0.0.1:18080), PROXY_ADDR (127.0.0.1:18443), SKIP_BUILD=1 (use the built binaries).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-1}"
TRANSFER_BYTES="${TRANSFER_BYTES:-1073741824}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-1000}"
ONLY="${ONLY:-certgate nginx haproxy caddy}"
LOAD_TIMEOUT="${LOAD_TIMEOUT:-300}" # seconds: a load run that takes longer is killed and recorded as failed
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certgate-target}"
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d /tmp/certgate-bench.XXXXXX)"
# OUT: where results/ and results.md go. With another OUT (a trial run), benches/ is left alone and
# OUT/README.md is a copy of benches/README.md with the results section filled in.
OUT="${OUT:-$HERE}"
mkdir -p "$OUT/results"
OUT="$(cd "$OUT" && pwd)"
RESULTS="$OUT/results/results.jsonl"
UPSTREAM="${UPSTREAM_ADDR:-127.0.0.1:18080}" # the echo upstream (plain HTTP)
LISTEN="${PROXY_ADDR:-127.0.0.1:18443}"      # every contestant's TLS listener
PIDS=()    # long-lived helpers (the upstream)
LOAD_PID="" # a load tool running in the background (S6)

log() { printf '\n== %s\n' "$*" >&2; }

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local p
  [ -z "$LOAD_PID" ] || kill "$LOAD_PID" 2>/dev/null || true
  stop_proxy || true
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}" $LOAD_PID; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. Packages and binaries -------------------------------------------------------------
install_peers() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v caddy >/dev/null || missing+=(caddy)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v pgrep >/dev/null || missing+=(procps)
  command -v python3 >/dev/null || missing+=(python3)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing: ${missing[*]} (run as root, or: apt-get install ${missing[*]})" >&2
      exit 1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # policy-rc.d keeps the packages' own services from starting (an existing one is left as is).
    local rcd=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      rcd=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$rcd" && chmod +x "$rcd"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$rcd" ] || rm -f "$rcd"
  fi
  # A distribution service left running would compete for the cores.
  for s in nginx haproxy caddy; do
    if command -v service >/dev/null && service "$s" status >/dev/null 2>&1; then
      service "$s" stop >/dev/null 2>&1 || true
    fi
  done
}

build() {
  if [ "${SKIP_BUILD:-0}" = 1 ] && [ -x "$BIN/certgate" ] && [ -x "$BIN/certgate-load" ]; then
    log "SKIP_BUILD=1: using the binaries in $BIN as they are"
    return 0
  fi
  log "building certgate and certgate-load (release)"
  (cd "$ROOT" && cargo build --release -q -p certgate -p certgate-benches)
}

ports_free() { # a leftover server on our ports would answer in place of the contestant
  local a
  for a in "$UPSTREAM" "$LISTEN"; do
    if (exec 3<>"/dev/tcp/${a%:*}/${a##*:}") 2>/dev/null; then
      echo "something already listens on $a (a leftover run, or a distribution service?): stop it first" >&2
      exit 1
    fi
  done
}

# --- 2. PKI (certgate pki, openssl for RSA): CA, CRL revoking one client, ECDSA and RSA server
#        certificates for localhost/127.0.0.1, the client CN=bench,O=ci-tools (PKCS#8 keys) ----------
make_pki() {
  local d="$WORK/pki"
  "$BIN/certgate" pki init --dir "$d" --org bench >/dev/null
  "$BIN/certgate" pki issue --dir "$d" --cn bench --org ci-tools >/dev/null
  "$BIN/certgate" pki issue --dir "$d" --cn revoked --org ci-tools >/dev/null
  "$BIN/certgate" pki revoke --dir "$d" --cert "$d/revoked.pem" >/dev/null
  mv "$d/server.pem" "$d/server-ecdsa.pem"
  mv "$d/server-key.pem" "$d/server-ecdsa-key.pem"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/server-rsa-key.pem" 2>/dev/null
  openssl req -new -key "$d/server-rsa-key.pem" -subj "/CN=localhost" -out "$d/rsa.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' >"$d/rsa.ext"
  openssl x509 -req -in "$d/rsa.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
    -days 30 -sha256 -extfile "$d/rsa.ext" -out "$d/server-rsa.pem" 2>/dev/null
  for k in ecdsa rsa; do # HAProxy wants certificate and key in one file
    cat "$d/server-$k.pem" "$d/server-$k-key.pem" >"$d/haproxy-$k.pem"
  done
  chmod 600 "$d"/*key*.pem "$d"/haproxy-*.pem
  cat >"$WORK/policy.yaml" <<'EOF'
permissions:
  bench: ["GET /bytes/{n}", "POST /upload", "GET /anything"]
groups:
  ci-tools: [bench]
EOF
}

# --- 3. Processes -------------------------------------------------------------------------
wait_http() { # URL [curl args...]: poll until 2xx, 20 s deadline
  local url=$1
  shift
  local deadline=$((SECONDS + 20))
  until curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "no answer from $url" >&2
      return 1
    fi
    sleep 0.05
  done
}

start_upstream() {
  taskset -c 1 "$BIN/certgate" echo --listen "$UPSTREAM" >"$WORK/echo.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://$UPSTREAM/bytes/1"
}

PROXY_PID=""
start_proxy() { # NAME KEY(ecdsa|rsa)
  local name=$1 key=$2 d="$WORK/pki" conf="$WORK/$1-$2"
  mkdir -p "$conf"
  local subst=(-e "s|@CERT@|$d/server-$key.pem|g" -e "s|@KEY@|$d/server-$key-key.pem|g"
    -e "s|@CA@|$d/ca.pem|g" -e "s|@CRL@|$d/crl.pem|g" -e "s|@HAPROXY_PEM@|$d/haproxy-$key.pem|g"
    -e "s|@POLICY@|$WORK/policy.yaml|g" -e "s|@LISTEN@|$LISTEN|g" -e "s|@UPSTREAM@|$UPSTREAM|g"
    -e "s|@HOST@|${LISTEN%:*}|g" -e "s|@PORT@|${LISTEN##*:}|g" -e "s|@DIR@|$conf|g")
  case $name in
  certgate)
    sed "${subst[@]}" "$HERE/peers/certgate.yaml" >"$conf/certgate.yaml"
    "$BIN/certgate" check -c "$conf/certgate.yaml" >"$conf/check.log" 2>&1 || {
      cat "$conf/check.log" >&2
      return 1
    }
    taskset -c 0 "$BIN/certgate" run -c "$conf/certgate.yaml" >"$conf/log" 2>&1 &
    ;;
  nginx)
    sed "${subst[@]}" "$HERE/peers/nginx.conf" >"$conf/nginx.conf"
    taskset -c 0 nginx -c "$conf/nginx.conf" -p "$conf" >"$conf/log" 2>&1 &
    ;;
  haproxy)
    sed "${subst[@]}" "$HERE/peers/haproxy.cfg" >"$conf/haproxy.cfg"
    taskset -c 0 haproxy -db -f "$conf/haproxy.cfg" >"$conf/log" 2>&1 &
    ;;
  caddy)
    sed "${subst[@]}" "$HERE/peers/Caddyfile" >"$conf/Caddyfile"
    HOME="$conf" XDG_DATA_HOME="$conf" XDG_CONFIG_HOME="$conf" GOMAXPROCS=1 \
      taskset -c 0 caddy run --adapter caddyfile --config "$conf/Caddyfile" >"$conf/log" 2>&1 &
    ;;
  *)
    echo "  unknown contestant $name (ONLY takes: certgate nginx haproxy caddy)" >&2
    return 1
    ;;
  esac
  PROXY_PID=$!
  if ! wait_http "https://localhost:${LISTEN##*:}/bytes/1" --resolve "localhost:${LISTEN##*:}:127.0.0.1" \
    --cacert "$d/ca.pem" --cert "$d/bench.pem" --key "$d/bench-key.pem"; then
    cat "$conf/log" >&2
    stop_proxy
    return 1
  fi
}

stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while kill -0 "$PROXY_PID" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && kill -KILL "$PROXY_PID" 2>/dev/null
    sleep 0.05
  done
  PROXY_PID=""
}

proxy_pids() { # the proxy and its children (NGINX workers)
  echo "$PROXY_PID"
  pgrep -P "$PROXY_PID" || true
}

cpu_ticks() { # user+system clock ticks of the proxy's processes, all threads
  local t=0 p
  for p in $(proxy_pids); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

rss_kib() {
  local r=0 p
  for p in $(proxy_pids); do
    [ -r "/proc/$p/status" ] && r=$((r + $(awk '/^VmRSS/{print $2}' "/proc/$p/status")))
  done
  echo "$r"
}

# --- 4. Scenarios ---------------------------------------------------------------------------
load() { # CONTESTANT KEY SCENARIO URL [certgate-load args...]: one JSON line into results
  local who=$1 key=$2 scenario=$3 url=$4
  shift 4
  local d="$WORK/pki" tls=() before after out
  case $url in https:*) tls=(--resolve "$LISTEN" --ca "$d/ca.pem" --cert "$d/bench.pem" --key "$d/bench-key.pem") ;; esac
  [ "$who" = direct ] && tls=(--resolve "$UPSTREAM")
  local rss=0
  before=0
  [ "$who" = direct ] || before=$(cpu_ticks)
  local rc=0
  out=$(timeout "$LOAD_TIMEOUT" taskset -c 1 "$BIN/certgate-load" --url "$url" "${tls[@]}" --json "$@" 2>"$WORK/load.err") || rc=$?
  if [ $rc -eq 0 ]; then
    after=0
    [ "$who" = direct ] || after=$(cpu_ticks) rss=$(rss_kib)
    printf '{"round":%s,"contestant":"%s","key":"%s","scenario":"%s","proxy_cpu_s":%s,"rss_kib":%s,"load":%s}\n' \
      "$ROUND" "$who" "$key" "$scenario" "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN{print t/hz}')" \
      "$rss" "$out" >>"$RESULTS"
    echo "  $who/$key $scenario: $(echo "$out" | cut -c1-150)" >&2
  else
    [ $rc -ne 124 ] || echo "killed after ${LOAD_TIMEOUT}s (LOAD_TIMEOUT)" >>"$WORK/load.err"
    [ -s "$WORK/load.err" ] || echo "certgate-load exited with status $rc" >"$WORK/load.err"
    record_error "$who" "$key" "$scenario" "$WORK/load.err"
  fi
}

record_error() { # CONTESTANT KEY SCENARIO FILE: the failed cell, with the first 200 characters of FILE
  printf '{"round":%s,"contestant":"%s","key":"%s","scenario":"%s","error":"%s"}\n' \
    "$ROUND" "$1" "$2" "$3" "$(tr -d '"\\\n\r\t' <"$4" | cut -c1-200)" >>"$RESULTS"
  echo "  $1/$2 $3: FAILED $(cat "$4")" >&2
}

idle_memory() { # CONTESTANT: S6, RSS just started and with IDLE_CONNECTIONS idle mTLS connections
  local who=$1 d="$WORK/pki" idle with ready="$WORK/ready"
  idle=$(rss_kib)
  rm -f "$ready"
  timeout 180 taskset -c 1 "$BIN/certgate-load" --url "https://localhost:${LISTEN##*:}/bytes/64" --resolve "$LISTEN" \
    --ca "$d/ca.pem" --cert "$d/bench.pem" --key "$d/bench-key.pem" --mode idle \
    --connections "$IDLE_CONNECTIONS" --duration 5s --ready-file "$ready" --json >"$WORK/idle.json" 2>"$WORK/load.err" &
  LOAD_PID=$!
  local deadline=$((SECONDS + 120)) held=0
  # The load tool writes the number of connections it holds into the ready file once all are open.
  until [ -s "$ready" ] || [ $SECONDS -ge $deadline ] || ! kill -0 "$LOAD_PID" 2>/dev/null; do sleep 0.05; done
  with=$(rss_kib)
  [ ! -s "$ready" ] || held=$(tr -cd '0-9' <"$ready")
  wait "$LOAD_PID" || true
  LOAD_PID=""
  if [ "${held:-0}" -eq 0 ]; then
    echo "no connection held ($(head -c 300 "$WORK/load.err"))" >"$WORK/idle.err"
    record_error "$who" ecdsa S6 "$WORK/idle.err"
    return 0
  fi
  printf '{"round":%s,"contestant":"%s","key":"ecdsa","scenario":"S6","rss_idle_kib":%s,"rss_with_kib":%s,"held":%s}\n' \
    "$ROUND" "$who" "$idle" "$with" "$held" >>"$RESULTS"
  echo "  $who S6: idle ${idle} KiB, with ${held} idle connections ${with} KiB" >&2
}

same_job() { # CONTESTANT: checks, and records, that the peer does the job: identity headers replaced, revoked client refused
  local who=$1 d="$WORK/pki" port=${LISTEN##*:} body code identity=true crl=true
  local c=(-sS --max-time 5 --resolve "localhost:$port:127.0.0.1" --cacert "$d/ca.pem")
  body=$(curl "${c[@]}" --cert "$d/bench.pem" --key "$d/bench-key.pem" -H 'ssl-client-verify: FORGED' \
    -H 'ssl-client-subject-dn: CN=forged' -H 'ssl-client-issuer-dn: CN=forged' "https://localhost:$port/anything" 2>&1) || true
  # certgate echo answers the request's headers as JSON, each header a list of its values.
  case $body in *'"ssl-client-verify":["SUCCESS"]'*) ;; *) identity=false ;; esac
  case $body in *'"ssl-client-subject-dn":["CN=bench,O=ci-tools"]'*) ;; *) identity=false ;; esac
  case $body in *'"ssl-client-issuer-dn":["CN='*) ;; *) identity=false ;; esac
  case $body in *FORGED* | *forged*) identity=false ;; esac
  code=$(curl "${c[@]}" -o /dev/null -w '%{http_code}' --cert "$d/revoked.pem" --key "$d/revoked-key.pem" \
    "https://localhost:$port/bytes/1" 2>/dev/null) || true
  [ "$code" != 200 ] || crl=false
  printf '{"round":%s,"contestant":"%s","key":"ecdsa","scenario":"job","identity_headers":%s,"revoked_refused":%s}\n' \
    "$ROUND" "$who" "$identity" "$crl" >>"$RESULTS"
  echo "  $who: identity headers replaced: $identity; revoked client certificate refused: $crl" >&2
  [ "$identity" = true ] || echo "  $who: the upstream saw: $body" >&2
}

contestant() { # NAME
  local who=$1 base="https://localhost:${LISTEN##*:}"
  log "$who (round $ROUND)"
  start_proxy "$who" ecdsa || {
    echo "  $who: did not start, skipped" >&2
    return 0
  }
  idle_memory "$who"
  same_job "$who"
  load "$who" ecdsa S1 "$base/bytes/64" --mode keepalive --connections 32 --duration "$DURATION"
  load "$who" ecdsa S2 "$base/bytes/64" --mode new-conn --connections 32 --duration "$DURATION"
  load "$who" ecdsa S2r "$base/bytes/64" --mode resume --connections 32 --duration "$DURATION"
  load "$who" ecdsa S5 "$base/bytes/64" --mode http2 --connections 32 --duration "$DURATION"
  load "$who" ecdsa S3 "$base/bytes/$TRANSFER_BYTES" --mode download
  load "$who" ecdsa S4 "$base/upload" --mode upload --bytes "$TRANSFER_BYTES"
  stop_proxy
  start_proxy "$who" rsa || return 0
  load "$who" rsa S2 "$base/bytes/64" --mode new-conn --connections 32 --duration "$DURATION"
  stop_proxy
}

machine_bounds() {
  log "openssl speed (core 0)"
  {
    taskset -c 0 openssl speed -seconds 2 ecdsap256 ecdhp256 ecdhx25519 rsa2048 2>/dev/null
    taskset -c 0 openssl speed -seconds 2 -evp aes-128-gcm 2>/dev/null
  } >"$OUT/results/openssl-speed.txt"
  python3 -B - "$HERE" "$OUT/results/openssl-speed.txt" >&2 <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import report
b = report.speed(sys.argv[2])
for k, label in (("bound_ecdsa", "ECDSA P-256 server key"), ("bound_rsa", "RSA-2048 server key")):
    v = b.get(k)
    print(f"  one-core full mTLS handshake bound, {label}: " + (f"{v:,.0f}/s" if v else "n/a (openssl speed output not understood)"))
EOF
}

versions() {
  {
    echo "certgate: $("$BIN/certgate" --version)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo "haproxy: $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}')"
    echo "caddy: $(caddy version 2>/dev/null | awk '{print $1}')"
    echo "openssl (peers): $(openssl version | awk '{print $2}')"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    echo "kernel: $(uname -r)"
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "duration: $DURATION per timed scenario, rounds: $ROUNDS, transfer: $TRANSFER_BYTES bytes"
  } >"$OUT/results/machine.txt"
}

main() {
  install_peers
  build
  make_pki
  versions
  ports_free
  : >"$RESULTS"
  start_upstream
  machine_bounds
  for ROUND in $(seq 1 "$ROUNDS"); do
    log "direct to the upstream (round $ROUND)"
    load direct - S1 "http://localhost:${UPSTREAM##*:}/bytes/64" --mode keepalive --connections 32 --duration "$DURATION"
    load direct - S2 "http://localhost:${UPSTREAM##*:}/bytes/64" --mode new-conn --connections 32 --duration "$DURATION"
    load direct - S3 "http://localhost:${UPSTREAM##*:}/bytes/$TRANSFER_BYTES" --mode download
    load direct - S4 "http://localhost:${UPSTREAM##*:}/upload" --mode upload --bytes "$TRANSFER_BYTES"
    for who in $ONLY; do
      if [ "$who" != certgate ] && ! command -v "$who" >/dev/null; then
        echo "  $who: not installed, skipped" >&2
        continue
      fi
      contestant "$who"
    done
  done
  [ "$OUT" = "$HERE" ] || cp "$HERE/README.md" "$OUT/README.md"
  python3 -B "$HERE/report.py" "$RESULTS" "$OUT/results/openssl-speed.txt" "$OUT/results/machine.txt" \
    "$OUT/results.md" "$OUT/README.md"
  log "written: $OUT/results/, $OUT/results.md and the Latest results section of $OUT/README.md"
}

# One line, so bash has read it whole before it runs: editing this file during a run is harmless.
main "$@"; exit $?
