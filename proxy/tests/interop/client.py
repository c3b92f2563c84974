"""The fleet's Python scripts' way of calling a service: ssl with a client certificate chain
and http.client (HTTP/1.1 only). Used by proxy/tests/interop.rs.

    python3 client.py URL CA_FILE CHAIN_FILE|- KEY_FILE|- 1.2|1.3

Prints "STATUS PROTO TLSVERSION" and the body, or the error on stderr and exits 1.
"""

import http.client
import ssl
import sys
import urllib.parse


def main():
    if len(sys.argv) != 6:
        sys.exit("usage: client.py URL CA CHAIN|- KEY|- 1.2|1.3")
    url, ca, chain, key, version = sys.argv[1:]
    ctx = ssl.create_default_context(cafile=ca)
    # load_cert_chain sends every certificate in the file: the leaf and its intermediate.
    if chain != "-":
        ctx.load_cert_chain(chain, key)
    pinned = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
    ctx.minimum_version = ctx.maximum_version = pinned
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=20)
    try:
        conn.request("GET", u.path or "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        tls = conn.sock.version()
    except (OSError, http.client.HTTPException) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{resp.status} HTTP/1.1 {tls}")
    sys.stdout.write(body)


if __name__ == "__main__":
    main()
