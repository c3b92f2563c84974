# shellcheck shell=bash
# Shared by deploy/test.sh and its parts: packages, podman settings, the local base images, the
# PKI, and the small assertion helpers. Sourced, not run.

# Podman settings for every podman call below, podman-compose and `podman play kube` included:
# runc (crun fails on kernels with hybrid cgroup v1/v2 mounts) and ulimits within the hard
# limits (podman's defaults ask for more than such machines allow, and the run fails).
podman_settings() {
  cat > "$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF="$WORK/containers.conf"
}

# What podman's networking runs but no package pulls in: checked before the first container, so
# a missing one is named here rather than surfacing as podman's "internal libpod error".
podman_preflight() {
  local tool
  for tool in iptables netavark; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/lib/podman/$tool" ] \
      || die "podman cannot set up container networks here: '$tool' is not installed (apt-get install $tool)"
  done
}

# Starts pod $1 (already created) and says podman's own reason when it does not start: podman
# itself prints only "internal libpod error"; the cause (a netavark or runc line) is in its
# debug log, so the start is retried once at debug level and the error lines are shown.
start_pod() {
  local pod=$1
  podman pod start "$pod" >/dev/null 2>"$WORK/pod-start.err" && return 0
  sed 's/^/     podman: /' "$WORK/pod-start.err"
  podman --log-level=debug pod start "$pod" 2>&1 >/dev/null \
    | grep -iE 'level=(error|warning)|netavark|iptables|nft|runc|os error' | tail -n 15 \
    | sed 's/^/     podman (debug): /'
  fail "pod $pod does not start (podman's reasons above)"
}

# The Debian mirror apt already uses (a fresh machine's or a CI image's), for debootstrap.
debian_mirror() {
  local m
  m=$(grep -hoE '^(URIs:|deb) *(\[[^]]*\] *)?https?://[^ ]+/debian/?( |$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    2>/dev/null | grep -oE 'https?://[^ ]+' | head -n 1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

install_packages() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "run as root (podman rootful, debootstrap): missing ${need[*]}"
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# A Debian root filesystem made with debootstrap, imported as a podman image, and kept: the
# image's tag is a hash of the recipe, so an existing image is reused and a changed recipe
# makes a new one. $1 = image name, $2 = suite, $3 = packages for debootstrap --include,
# $4 = packages from <suite>-security installed afterwards (may be empty).
local_base_image() {
  local name=$1 suite=$2 include=$3 security=$4 tag image root mirror
  tag=$(printf '%s\n' "v1" "$suite" "$include" "$security" | sha256sum | cut -c1-12)
  image="$name:$tag"
  if podman image exists "$image"; then
    log "base image $image (cached)"
    echo "$image"
    return
  fi
  mirror=$(debian_mirror)
  root="$WORK/rootfs-${name##*/}"
  rm -rf "$root"
  log "debootstrap $suite ($include${security:+; then $security}) from $mirror"
  nice -n 10 debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" \
    > "$WORK/debootstrap-${name##*/}.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap-${name##*/}.log" >&2; die "debootstrap $suite failed"; }
  if [ -n "$security" ]; then
    echo "deb ${mirror%/debian*}/debian-security $suite-security main" \
      > "$root/etc/apt/sources.list.d/security.list"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # shellcheck disable=SC2086 # a package list
    DEBIAN_FRONTEND=noninteractive nice -n 10 chroot "$root" sh -c \
      "apt-get update -qq && apt-get install -y -qq --no-install-recommends $security" \
      >> "$WORK/debootstrap-${name##*/}.log" 2>&1 \
      || { tail -n 20 "$WORK/debootstrap-${name##*/}.log" >&2; die "installing $security failed"; }
    rm -f "$root/etc/resolv.conf"
  fi
  # As in Debian's own images: no package cache, no lists (apt-get update refills them).
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import -q - "$image" >/dev/null
  rm -rf "$root"
  echo "$image"
}

# The runtime base: Debian bookworm, like debian:bookworm-slim, plus what the Dockerfile's
# runtime stage installs (ca-certificates).
runtime_base() { local_base_image localhost/certgate-test/bookworm bookworm ca-certificates ""; }

# The build base, in the role of rust:1-bookworm: bookworm with what the Dockerfile's build stage
# installs (cmake perl make gcc), and Debian's current Rust for bookworm (rustc-web/cargo-web
# from bookworm-security; bookworm's own rustc is too old for the locked dependencies). Same
# glibc as the runtime base, as with the public images.
build_base() {
  local_base_image localhost/certgate-test/bookworm-rust bookworm \
    ca-certificates,cmake,perl,make,gcc,libc6-dev "rustc-web cargo-web"
}

# Crates for a build container that has no network: `cargo vendor` on the host (which reaches
# the crate registry), kept per Cargo.lock.
vendored_crates() {
  local key dir
  key=$(sha256sum "$REPO/Cargo.lock" | cut -c1-12)
  dir="$CACHE/vendor-$key"
  if [ ! -f "$dir/.complete" ]; then
    command -v cargo >/dev/null 2>&1 || install_packages cargo-web
    log "cargo vendor -> $dir"
    rm -rf "$dir"
    (cd "$REPO" && cargo vendor --locked --versioned-dirs -q "$dir" >/dev/null)
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# certgate's own CLI from the image under test, for the PKI (files owned by the caller).
certgate_cli() {
  local dir=$1
  shift
  podman run --rm --network none --user 0:0 -v "$dir:/pki" "${IMAGE:?}" "$@"
}

# A dev PKI for the sidecars: CA, server certificate for localhost and 127.0.0.1, empty CRL,
# and client certificates "CN:O" ... Readable by the image's uid 65532 (README: file ownership).
make_pki() {
  local dir=$1 spec
  shift
  mkdir -p "$dir"
  certgate_cli "$dir" pki init --dir /pki --name localhost --name 127.0.0.1 >/dev/null
  for spec in "$@"; do
    certgate_cli "$dir" pki issue --dir /pki --cn "${spec%%:*}" --org "${spec#*:}" >/dev/null
  done
  chown -R 65532:65532 "$dir"
}

revoke() {
  local dir=$1 name=$2
  certgate_cli "$dir" pki revoke --dir /pki --cert "/pki/$name.pem" >/dev/null
  chown -R 65532:65532 "$dir"
}

port_free() {
  local p
  for p in "$@"; do
    [ -z "$(ss -ltnH "sport = :$p" 2>/dev/null)" ] || die "port $p is in use on this machine"
  done
}

# curl over mTLS to 127.0.0.1 (the name localhost is pinned to 127.0.0.1, so never ::1).
# $1 = client name in $PKI_DIR ("" for none), $2 = port, $3 = path, rest = curl options.
# Prints the HTTP status (000 when there was none) and leaves the body in $WORK/body.
mtls() {
  local who=$1 port=$2 path=$3 cert=()
  shift 3
  [ -n "$who" ] && cert=(--cert "$PKI_DIR/$who.pem" --key "$PKI_DIR/$who-key.pem")
  curl -sS --max-time 10 --cacert "$PKI_DIR/ca.pem" "${cert[@]}" \
    --resolve "localhost:$port:127.0.0.1" -o "$WORK/body" -w '%{http_code}' "$@" \
    "https://localhost:$port$path" 2> "$WORK/curl.err" || true
}

# The TLS alert a client reads, with openssl s_client (curl may report the reset that follows
# the alert instead, when its request is already on the wire). $1 = client name or "", $2 = port.
tls_alert() {
  local cert=()
  [ -n "$1" ] && cert=(-cert "$PKI_DIR/$1.pem" -key "$PKI_DIR/$1-key.pem")
  printf 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' \
    | timeout 10 openssl s_client -ign_eof -connect "127.0.0.1:$2" -servername localhost \
      -CAfile "$PKI_DIR/ca.pem" "${cert[@]}" 2>&1 | grep -o 'alert [a-z ]*' | head -n 1 || true
}

http_status() {
  curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2" || true
}

# Polls "$@" (a command) every half second until it succeeds or $2 seconds pass.
wait_for() {
  local what=$1 secs=$2 end
  shift 2
  end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { fail "$what (waited ${secs}s)"; return 1; }
    sleep 0.5
  done
}

ready() { [ "$(http_status "$1" /readyz)" = 200 ]; }

# A header's values, as the echo upstream saw them, from $WORK/body (JSON list, "" if absent).
echoed() {
  "$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["headers"].get(sys.argv[2])))' \
    "$WORK/body" "$1"
}

PASSED=0
FAILED=0
log() { echo "deploy/test: $*" >&2; }
pass() { PASSED=$((PASSED + 1)); echo "ok   $*"; }
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL $*"
  [ -s "$WORK/curl.err" ] && sed 's/^/     curl: /' "$WORK/curl.err"
  return 1
}
die() { echo "deploy/test: $*" >&2; exit 1; }
# check / refuse DESCRIPTION COMMAND...: the command must succeed / must fail.
check() {
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
refuse() {
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then fail "$what"; else pass "$what"; fi
}
expect() { # expect DESCRIPTION ACTUAL WANTED
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi
}
