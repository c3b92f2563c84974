# shellcheck shell=bash
# The Kubernetes sidecar pod (deploy/kubernetes) under `podman play kube`, fed the ConfigMap the
# kustomization generates and the Secret + CRL ConfigMap that secret.example.yaml's commands
# create (kube_manifests.py). Two things podman cannot do are stood in for, and only them:
# - projected volumes: the tls volume becomes a hostPath directory that kube_manifests.py fills
#   exactly as the kubelet does (timestamped directory, `..data` symlink swapped by rename, files
#   root:fsGroup with defaultMode), so a CRL update is the same atomic swap certgate sees in a
#   cluster;
# - Services: the certgate ports get hostIP 127.0.0.1 and a hostPort, and the test calls those.

KUBE_HTTPS=28443
KUBE_ADMIN=29901

kube_checks() {
  local dir="$WORK/kube" pod ctr
  PKI_DIR="$dir/pki"
  port_free "$KUBE_HTTPS" "$KUBE_ADMIN"
  make_pki "$PKI_DIR" alice:ci-tools
  "$PY" "$HERE/test/kube_manifests.py" render --kustomize "$REPO/deploy/kubernetes" \
    --pki "$PKI_DIR" --tls-dir "$dir/tls" --image "$IMAGE" --out "$dir" \
    --https-port "$KUBE_HTTPS" --admin-port "$KUBE_ADMIN"
  CLEANUP+=("kube_down")
  podman play kube --configmap "$dir/configmap.yaml" "$dir/pod.yaml" > "$WORK/kube-up.log" 2>&1 \
    || { tail -n 30 "$WORK/kube-up.log"; fail "podman play kube"; }
  pod=$(podman pod ps --format '{{.Name}}' --filter name=certgate-test | head -n 1)
  [ -n "$pod" ] || fail "no pod named certgate-test*"
  for ctr in app certgate; do
    wait_for "container $ctr running" 30 container_running "$pod-$ctr"
    pass "container $ctr is running"
    expect "$ctr: read-only root filesystem, uid 65532" \
      "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$pod-$ctr") $(podman exec "$pod-$ctr" id -u)" \
      "true 65532"
  done
  local probe path port
  while read -r probe path port; do
    wait_for "$probe $path answers 200" 60 probe_ok "$port" "$path" \
      || { podman logs "$pod-certgate" | tail -n 20; return 1; }
    pass "$probe URL $path answers 200"
  done < "$dir/probes"
  [ -s "$dir/probes" ] || fail "the certgate container has no httpGet probes"

  expect "mTLS through the sidecar: GET /api/v1/status" "$(mtls alice "$KUBE_HTTPS" /api/v1/status)" 200
  expect "the app got the verified subject" "$(echoed ssl-client-subject-dn)" '["CN=alice,O=ci-tools"]'
  expect "no client certificate: the client reads the alert 'certificate required'" \
    "$(tls_alert "" "$KUBE_HTTPS")" "alert certificate required"

  local before
  before=$(readlink "$dir/tls/..data")
  revoke "$PKI_DIR" alice
  "$PY" "$HERE/test/kube_manifests.py" swap --kustomize "$REPO/deploy/kubernetes" \
    --pki "$PKI_DIR" --tls-dir "$dir/tls"
  [ "$(readlink "$dir/tls/..data")" != "$before" ] || fail "..data was not swapped"
  wait_for "the swapped CRL revokes alice" 20 kube_revoked
  pass "after the ..data swap alice's handshake fails with alert certificate revoked"
  expect "  and curl gets no HTTP response" "$(mtls alice "$KUBE_HTTPS" /api/v1/status)" 000
  kube_down
}

container_running() { [ "$(podman inspect -f '{{.State.Status}}' "$1")" = running ]; }
probe_ok() { [ "$(http_status "$1" "$2")" = 200 ]; }
kube_revoked() { [ "$(tls_alert alice "$KUBE_HTTPS")" = "alert certificate revoked" ]; }

kube_down() {
  podman play kube --down "$WORK/kube/pod.yaml" > "$WORK/kube-down.log" 2>&1 || true
  podman volume rm -f certgate-config > /dev/null 2>&1 || true
}
