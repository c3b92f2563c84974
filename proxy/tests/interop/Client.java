// The Jenkins plugin's way of calling a service: JSSE with a PKCS12 keystore holding the client
// key and its chain, java.net.http.HttpClient over HTTP/2 or HTTP/1.1. Used by
// proxy/tests/interop.rs.
//
//   java -cp DIR Client URL CA_FILE KEYSTORE.p12|- PASSWORD 1.2|1.3 1.1|2 [any-ca]
//
// With "any-ca" the key manager offers the keystore's key whatever CAs the server names (as a
// custom X509KeyManager does); JSSE's default offers only a key that chains to one of them.
//
// Prints "STATUS PROTO TLSVERSION" and the body, or the exception and its causes on stderr
// and exits 1.

import java.io.FileInputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.net.Socket;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.cert.X509Certificate;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.X509ExtendedKeyManager;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;

public class Client {
    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable e) {
            // The alert's name is often only in a cause (HttpClient wraps the SSLException).
            for (Throwable t = e; t != null; t = t.getCause()) {
                System.err.println(t);
            }
            System.exit(1);
        }
    }

    static void run(String[] args) throws Exception {
        boolean anyCa = args.length == 7 && args[6].equals("any-ca");
        if (args.length != 6 && !anyCa) {
            throw new IllegalArgumentException("usage: Client URL CA KEYSTORE|- PASSWORD 1.2|1.3 1.1|2 [any-ca]");
        }
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        try (FileInputStream in = new FileInputStream(args[1])) {
            trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);

        KeyManagerFactory kmf = null;
        if (!args[2].equals("-")) {
            char[] password = args[3].toCharArray();
            KeyStore keys = KeyStore.getInstance("PKCS12");
            try (FileInputStream in = new FileInputStream(args[2])) {
                keys.load(in, password);
            }
            kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(keys, password);
        }
        SSLContext ctx = SSLContext.getInstance("TLS");
        KeyManager[] keyManagers = kmf == null ? null : kmf.getKeyManagers();
        if (anyCa && keyManagers != null) {
            keyManagers = new KeyManager[] {new AnyCa((X509ExtendedKeyManager) keyManagers[0])};
        }
        ctx.init(keyManagers, tmf.getTrustManagers(), null);

        SSLParameters params = ctx.getDefaultSSLParameters();
        switch (args[4]) {
            case "1.2": params.setProtocols(new String[] {"TLSv1.2"}); break;
            case "1.3": params.setProtocols(new String[] {"TLSv1.3"}); break;
            default: throw new IllegalArgumentException("TLS version " + args[4]);
        }
        HttpClient.Version version;
        switch (args[5]) {
            case "1.1": version = HttpClient.Version.HTTP_1_1; break;
            case "2": version = HttpClient.Version.HTTP_2; break;
            default: throw new IllegalArgumentException("HTTP version " + args[5]);
        }
        HttpClient client = HttpClient.newBuilder()
                .sslContext(ctx)
                .sslParameters(params)
                .version(version)
                .connectTimeout(Duration.ofSeconds(20))
                .build();
        HttpRequest req = HttpRequest.newBuilder(URI.create(args[0])).timeout(Duration.ofSeconds(20)).GET().build();
        HttpResponse<String> resp = client.send(req, HttpResponse.BodyHandlers.ofString());
        String tls = resp.sslSession().map(s -> s.getProtocol()).orElse("none");
        String proto = resp.version() == HttpClient.Version.HTTP_2 ? "HTTP/2.0" : "HTTP/1.1";
        System.out.print(resp.statusCode() + " " + proto + " " + tls + "\n" + resp.body());
    }

    /** Offers the keystore's client key whatever issuers the server asks for. */
    static final class AnyCa extends X509ExtendedKeyManager {
        private final X509ExtendedKeyManager inner;

        AnyCa(X509ExtendedKeyManager inner) {
            this.inner = inner;
        }

        public String chooseEngineClientAlias(String[] keyType, Principal[] issuers, SSLEngine engine) {
            return inner.chooseEngineClientAlias(keyType, null, engine);
        }

        public String chooseClientAlias(String[] keyType, Principal[] issuers, Socket socket) {
            return inner.chooseClientAlias(keyType, null, socket);
        }

        public String[] getClientAliases(String keyType, Principal[] issuers) {
            return inner.getClientAliases(keyType, null);
        }

        public String chooseServerAlias(String keyType, Principal[] issuers, Socket socket) {
            return inner.chooseServerAlias(keyType, issuers, socket);
        }

        public String[] getServerAliases(String keyType, Principal[] issuers) {
            return inner.getServerAliases(keyType, issuers);
        }

        public X509Certificate[] getCertificateChain(String alias) {
            return inner.getCertificateChain(alias);
        }

        public PrivateKey getPrivateKey(String alias) {
            return inner.getPrivateKey(alias);
        }
    }
}
