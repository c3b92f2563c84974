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
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-1}"
TRANSFER_BYTES="${TRANSFER_BYTES:-1073741824}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-1000}"
ONLY="${ONLY:-certgate nginx haproxy caddy}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/certgate-target}"
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d /tmp/certgate-bench.XXXXXX)"
RESULTS="$HERE/results/results.jsonl"
mkdir -p "$HERE/results"
UPSTREAM=127.0.0.1:18080
LISTEN=127.0.0.1:18443
PIDS=()

log() { printf '\n== %s\n' "$*" >&2; }

cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  stop_proxy || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- 1. Packages and binaries -------------------------------------------------------------
install_peers() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v caddy >/dev/null || missing+=(caddy)
  command -v taskset >/dev/null || missing+=(util-linux)
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
    # policy-rc.d keeps the packages' own services from starting on our ports.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
  # A distribution service left running would compete for the cores.
  for s in nginx haproxy caddy; do
    if command -v service >/dev/null && service "$s" status >/dev/null 2>&1; then
      service "$s" stop >/dev/null 2>&1 || true
    fi
  done
}

build() {
  log "building certgate and certgate-load (release)"
  (cd "$ROOT" && cargo build --release -q -p certgate -p certgate-benches)
}

# --- 2. PKI: CA + CRL (certgate pki), ECDSA and RSA server certificates, one client --------
make_pki() {
  local d="$WORK/pki"
  "$BIN/certgate" pki init --dir "$d" --org bench >/dev/null
  "$BIN/certgate" pki issue --dir "$d" --cn bench --org ci-tools >/dev/null
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
  bench: ["GET /bytes/{n}", "POST /upload"]
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
  before=$([ "$who" = direct ] && echo 0 || cpu_ticks)
  if out=$(taskset -c 1 "$BIN/certgate-load" --url "$url" "${tls[@]}" --json "$@" 2>"$WORK/load.err"); then
    after=$([ "$who" = direct ] && echo 0 || cpu_ticks)
    printf '{"round":%s,"contestant":"%s","key":"%s","scenario":"%s","proxy_cpu_s":%s,"rss_kib":%s,"load":%s}\n' \
      "$ROUND" "$who" "$key" "$scenario" "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN{print t/hz}')" \
      "$([ "$who" = direct ] && echo 0 || rss_kib)" "$out" >>"$RESULTS"
    echo "  $who/$key $scenario: $(echo "$out" | cut -c1-150)" >&2
  else
    printf '{"round":%s,"contestant":"%s","key":"%s","scenario":"%s","error":"%s"}\n' \
      "$ROUND" "$who" "$key" "$scenario" "$(tr -d '"\n' <"$WORK/load.err" | cut -c1-200)" >>"$RESULTS"
    echo "  $who/$key $scenario: FAILED $(cat "$WORK/load.err")" >&2
  fi
}

idle_memory() { # CONTESTANT: S6, RSS just started and with IDLE_CONNECTIONS idle mTLS connections
  local who=$1 d="$WORK/pki" idle with ready="$WORK/ready"
  idle=$(rss_kib)
  rm -f "$ready"
  taskset -c 1 "$BIN/certgate-load" --url "https://localhost:${LISTEN##*:}/bytes/64" --resolve "$LISTEN" \
    --ca "$d/ca.pem" --cert "$d/bench.pem" --key "$d/bench-key.pem" --mode idle \
    --connections "$IDLE_CONNECTIONS" --duration 5s --ready-file "$ready" --json >"$WORK/idle.json" 2>"$WORK/load.err" &
  local lp=$! deadline=$((SECONDS + 120))
  until [ -f "$ready" ] || [ $SECONDS -ge $deadline ] || ! kill -0 $lp 2>/dev/null; do sleep 0.05; done
  with=$(rss_kib)
  local held
  held=$(cat "$ready" 2>/dev/null || echo 0)
  wait $lp || true
  printf '{"round":%s,"contestant":"%s","key":"ecdsa","scenario":"S6","rss_idle_kib":%s,"rss_with_kib":%s,"held":%s}\n' \
    "$ROUND" "$who" "$idle" "$with" "${held:-0}" >>"$RESULTS"
  echo "  $who S6: idle ${idle} KiB, with ${held} idle connections ${with} KiB" >&2
}

contestant() { # NAME
  local who=$1 base="https://localhost:${LISTEN##*:}"
  log "$who (round $ROUND)"
  start_proxy "$who" ecdsa || {
    echo "  $who: did not start, skipped" >&2
    return 0
  }
  idle_memory "$who"
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
    taskset -c 0 openssl speed -seconds 2 ecdsap256 ecdhp256 rsa2048 2>/dev/null
    taskset -c 0 openssl speed -seconds 2 -evp aes-128-gcm 2>/dev/null
  } >"$HERE/results/openssl-speed.txt"
  tail -n 12 "$HERE/results/openssl-speed.txt" >&2
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
  } >"$HERE/results/machine.txt"
}

main() {
  install_peers
  build
  make_pki
  versions
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
  python3 "$HERE/report.py" "$RESULTS" "$HERE/results/openssl-speed.txt" "$HERE/results/machine.txt" \
    "$HERE/results.md" "$HERE/README.md"
  log "written: benches/results.md and the Latest results section of benches/README.md"
}

main "$@"
