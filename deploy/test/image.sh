# shellcheck shell=bash
# The image on its own, run the way deploy/README.md says: read-only root filesystem, all
# capabilities dropped, no new privileges, as the image's uid 65532. One pod holds the echo
# upstream on 127.0.0.1:8080 and certgate in front of it; only 127.0.0.1 ports are published.

IMAGE_HTTPS=18443
IMAGE_ADMIN=19901

image_checks() {
  local dir="$WORK/image" pod=certgate-test-image
  PKI_DIR="$dir/pki"
  port_free "$IMAGE_HTTPS" "$IMAGE_ADMIN"
  expect "image user is 65532:65532" "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" 65532:65532
  make_pki "$PKI_DIR" alice:devs
  cat > "$dir/certgate.yaml" <<'EOF'
admin:
  listen: 0.0.0.0:9901
tls:
  cert: /etc/certgate/pki/server.pem
  key: /etc/certgate/pki/server-key.pem
  client_ca: /etc/certgate/pki/ca.pem
  crl: [/etc/certgate/pki/crl.pem]
  client_auth: required
listeners:
  - name: app
    listen: 0.0.0.0:8443
    upstream: http://127.0.0.1:8080
    headers: [nginx-ingress]
EOF
  chmod 0644 "$dir/certgate.yaml"
  CLEANUP+=("podman pod rm -f -t 2 $pod")
  podman pod create --name "$pod" \
    -p "127.0.0.1:$IMAGE_HTTPS:8443" -p "127.0.0.1:$IMAGE_ADMIN:9901" >/dev/null
  # The pod (its network) is started on its own first, so that a host that cannot give it a
  # network is told why; then the two containers join it.
  start_pod "$pod" || return 1
  local hardened=(--pod "$pod" --read-only --cap-drop ALL --security-opt no-new-privileges)
  podman run -d --name "$pod-app" "${hardened[@]}" "$IMAGE" echo --listen 127.0.0.1:8080 >/dev/null
  podman run -d --name "$pod-proxy" "${hardened[@]}" \
    -v "$dir/certgate.yaml:/etc/certgate/certgate.yaml:ro" \
    -v "$PKI_DIR:/etc/certgate/pki:ro" "$IMAGE" >/dev/null

  wait_for "/readyz answers 200 on 127.0.0.1:$IMAGE_ADMIN" 60 ready "$IMAGE_ADMIN" \
    || { podman logs "$pod-proxy" | tail -n 20; return 1; }
  pass "/readyz answers 200"
  expect "/healthz answers 200" "$(http_status "$IMAGE_ADMIN" /healthz)" 200

  expect "the proxy runs as uid 65532" "$(podman exec "$pod-proxy" id -u)" 65532
  expect "the proxy has no effective capabilities" \
    "$(podman top "$pod-proxy" capeff | sed -n 2p | tr -d ' ')" none
  expect "the root filesystem is read-only" \
    "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$pod-proxy")" true
  refuse "a write to the root filesystem fails" podman exec "$pod-proxy" sh -c ': > /etc/certgate/x'

  expect "mTLS request with a client certificate: 200" "$(mtls alice "$IMAGE_HTTPS" /hello)" 200
  expect "the upstream got the request path" \
    "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["path"])' "$WORK/body")" /hello
  expect "the upstream got the verified subject" "$(echoed ssl-client-subject-dn)" '["CN=alice,O=devs"]'
  expect "no client certificate: no HTTP response" "$(mtls "" "$IMAGE_HTTPS" /hello)" 000
  expect "no client certificate: the client reads the alert 'certificate required'" \
    "$(tls_alert "" "$IMAGE_HTTPS")" "alert certificate required"
  podman pod rm -f -t 2 "$pod" >/dev/null
}
