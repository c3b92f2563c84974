# shellcheck shell=bash
# deploy/docker-compose.yml under podman-compose, unchanged, from a copy of deploy/ and
# policies/ (so the PKI it makes never lands in the repository). The image is the one under
# test (CERTGATE_IMAGE); the sidecars run as the file's default uid 65532.

COMPOSE_PROJECT=certgate-test

compose() {
  podman-compose -p "$COMPOSE_PROJECT" -f "$WORK/compose/deploy/docker-compose.yml" "$@"
}

# A TCP connection from a throwaway container on network $1 to $2 port $3 (bash's /dev/tcp),
# given up after 5 s: an address with no route would otherwise wait for the kernel's timeout.
tcp_from() {
  podman run --rm --network "$1" --entrypoint timeout "$IMAGE" \
    5 bash -c "exec 3<>/dev/tcp/$2/$3" >/dev/null 2>&1
}

compose_checks() {
  local tree="$WORK/compose" ctl="${COMPOSE_PROJECT}_controller-sidecar_1"
  local reg="${COMPOSE_PROJECT}_registry-sidecar_1" app="${COMPOSE_PROJECT}_controller_1"
  port_free 8443 8444 9901 9902
  mkdir -p "$tree"
  cp -r "$REPO/deploy" "$REPO/policies" "$tree/"
  rm -rf "$tree/deploy/pki"
  PKI_DIR="$tree/deploy/pki"
  make_pki "$PKI_DIR" jenkins:ci-tools mallory:ci-tools
  export CERTGATE_IMAGE="$IMAGE" ANKA_ROOT_TOKEN="root-token-$RANDOM$RANDOM"
  CLEANUP+=("compose_down")
  compose up -d --no-build > "$WORK/compose-up.log" 2>&1 \
    || { tail -n 30 "$WORK/compose-up.log"; fail "podman-compose up"; }
  wait_for "controller sidecar /readyz on 127.0.0.1:9901" 60 ready 9901
  wait_for "registry sidecar /readyz on 127.0.0.1:9902" 60 ready 9902
  pass "both sidecars ready"
  for c in "$ctl" "$reg"; do
    expect "$c: read-only, uid 65532" \
      "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}' "$c")" "true 65532:65532"
    check "$c: the compose file's healthcheck passes" podman healthcheck run "$c"
  done

  # Both sidecars serve mTLS and forward the verified identity.
  expect "controller: mTLS GET /api/v1/status" "$(mtls jenkins 8443 /api/v1/status)" 200
  expect "controller: subject forwarded" "$(echoed ssl-client-subject-dn)" '["CN=jenkins,O=ci-tools"]'
  expect "registry: mTLS GET /registry/status" "$(mtls jenkins 8444 /registry/status)" 200
  expect "registry: user forwarded" "$(echoed x-certgate-user)" '["jenkins"]'
  expect "registry: root token, no certificate" \
    "$(mtls "" 8444 /registry/status -u "root:$ANKA_ROOT_TOKEN")" 200
  expect "registry: the root token's permission" "$(echoed x-certgate-permission)" '["root"]'
  expect "registry: a wrong root token is refused" \
    "$(mtls "" 8444 /registry/status -u "root:not-$ANKA_ROOT_TOKEN")" 401

  # Client-sent identity headers never reach the app, and never grant anything.
  local spoof=(-H 'ssl-client-verify: SUCCESS' -H 'ssl-client-subject-dn: CN=admin,O=anka-admins'
    -H 'x-certgate-user: admin' -H 'x-certgate-groups: anka-admins')
  expect "spoofed headers with a certificate: 200" "$(mtls jenkins 8443 /api/v1/status "${spoof[@]}")" 200
  expect "  subject is the certificate's" "$(echoed ssl-client-subject-dn)" '["CN=jenkins,O=ci-tools"]'
  expect "  user is the certificate's" "$(echoed x-certgate-user)" '["jenkins"]'
  expect "  groups are the certificate's" "$(echoed x-certgate-groups)" '["ci-tools"]'
  expect "spoofed admin group grants nothing: 403" \
    "$(mtls jenkins 8443 /api/v1/node/update -X PUT "${spoof[@]}")" 403
  expect "spoofed headers without a certificate: anonymous /livez 200" \
    "$(mtls "" 8443 /livez "${spoof[@]}")" 200
  expect "  ssl-client-verify is NONE" "$(echoed ssl-client-verify)" '["NONE"]'
  expect "  no subject reaches the app" "$(echoed ssl-client-subject-dn)" null
  expect "  no user reaches the app" "$(echoed x-certgate-user)" null
  expect "spoofed headers without a certificate: /api/v1/status 401" \
    "$(mtls "" 8443 /api/v1/status "${spoof[@]}")" 401

  # The apps are reachable only through the sidecars.
  for svc in controller registry; do
    expect "$svc publishes no port" "$(podman port "${COMPOSE_PROJECT}_${svc}_1" | wc -l)" 0
  done
  expect "network app is internal" \
    "$(podman network inspect -f '{{.Internal}}' "${COMPOSE_PROJECT}_app")" true
  check "the controller sidecar reaches controller:80 (so the probe works)" \
    podman exec "$ctl" bash -c 'exec 3<>/dev/tcp/controller/80'
  refuse "from the edge network, controller:80 is unreachable" \
    tcp_from "${COMPOSE_PROJECT}_edge" controller 80
  refuse "from the edge network, registry:8089 is unreachable" \
    tcp_from "${COMPOSE_PROJECT}_edge" registry 8089
  local app_ip
  app_ip=$(podman inspect -f "{{(index .NetworkSettings.Networks \"${COMPOSE_PROJECT}_app\").IPAddress}}" "$app")
  check "from the app network, the controller's address ($app_ip) answers (so the probe works)" \
    podman exec "$ctl" bash -c "exec 3<>/dev/tcp/$app_ip/80"
  refuse "from the edge network, the controller's address ($app_ip) is unreachable" \
    tcp_from "${COMPOSE_PROJECT}_edge" "$app_ip" 80

  # Revocation: the CRL in the pki directory mount is rewritten, and both sidecars refuse.
  expect "mallory before revocation: controller 200" "$(mtls mallory 8443 /api/v1/status)" 200
  expect "mallory before revocation: registry 200" "$(mtls mallory 8444 /registry/status)" 200
  revoke "$PKI_DIR" mallory
  local port path
  for port in 8443 8444; do
    path=/api/v1/status
    [ "$port" = 8444 ] && path=/registry/status
    wait_for "port $port refuses the revoked certificate" 20 revoked_on "$port" "$path"
    pass "port $port: revoked certificate gets 401 \"certificate revoked\""
  done
  expect "jenkins after the revocation: 200" "$(mtls jenkins 8443 /api/v1/status)" 200
  compose_down
}

# Anonymous requests may reach /livez, so ask for a route that needs an authenticated client.
revoked_on() {
  [ "$(mtls mallory "$1" "$2")" = 401 ] || return 1
  "$PY" -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["reason"] != "certificate revoked")' "$WORK/body"
}

# podman-compose 1.0.x leaves the networks behind.
compose_down() {
  compose down -t 5 > "$WORK/compose-down.log" 2>&1 || true
  podman network rm -f "${COMPOSE_PROJECT}_app" "${COMPOSE_PROJECT}_edge" >/dev/null 2>&1 || true
}
