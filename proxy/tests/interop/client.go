// The Anka agent's and CLI's way of calling a service: crypto/tls with a client certificate
// chain, net/http over HTTP/2 or HTTP/1.1. Used by proxy/tests/interop.rs.
//
//	client URL CA_FILE CHAIN_FILE|- KEY_FILE|- 1.2|1.3 1.1|2 [callback]
//
// With "callback" the certificate comes from GetClientCertificate, as in agents that rotate
// their certificate: crypto/tls then sends it whatever CAs the server names.
//
// Prints "STATUS PROTO TLSVERSION" and the body, or the error on stderr and exits 1.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 7 && !(len(os.Args) == 8 && os.Args[7] == "callback") {
		fail(fmt.Errorf("usage: client URL CA CHAIN|- KEY|- 1.2|1.3 1.1|2 [callback]"))
	}
	url, caFile, chainFile, keyFile, version, httpVersion := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6]
	pem, err := os.ReadFile(caFile)
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail(fmt.Errorf("no certificate in %s", caFile))
	}
	cfg := &tls.Config{RootCAs: roots}
	// The chain file holds the leaf and its intermediate: tls.LoadX509KeyPair sends them all.
	if chainFile != "-" {
		pair, err := tls.LoadX509KeyPair(chainFile, keyFile)
		if err != nil {
			fail(err)
		}
		if len(os.Args) == 8 {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return &pair, nil
			}
		} else {
			cfg.Certificates = []tls.Certificate{pair}
		}
	}
	switch version {
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	default:
		fail(fmt.Errorf("TLS version %q", version))
	}
	transport := &http.Transport{TLSClientConfig: cfg}
	switch httpVersion {
	case "2":
		// A custom TLSClientConfig turns Go's automatic HTTP/2 off unless asked for again.
		transport.ForceAttemptHTTP2 = true
	case "1.1":
		// A non-nil empty map is how net/http is told not to offer h2.
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	default:
		fail(fmt.Errorf("HTTP version %q", httpVersion))
	}
	client := &http.Client{Transport: transport, Timeout: 20 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fail(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fail(err)
	}
	tlsVersion := "none"
	if resp.TLS != nil {
		tlsVersion = map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[resp.TLS.Version]
	}
	fmt.Printf("%d %s %s\n%s", resp.StatusCode, resp.Proto, tlsVersion, body)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
