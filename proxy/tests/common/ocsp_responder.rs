//! A real OCSP responder: `openssl ocsp -index ... -port ...`, signing with a delegated
//! OCSP-signing certificate the CA issued. Its index file (the `openssl ca` database format)
//! says which serials are valid or revoked; the responder rereads it when it changes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use certgate::pki::{self, Issued};
use openssl::x509::X509;

use super::{cert_pem, free_addr, key_pem, spec, wait_for, write};

pub struct OcspResponder {
    pub addr: SocketAddr,
    child: Child,
    index: PathBuf,
    pub out: PathBuf,
}

impl Drop for OcspResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serial_hex(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

impl OcspResponder {
    /// Starts a responder for `ca` in `dir` that knows `good` (valid) and `revoked`, answering
    /// with a nextUpdate `next_minutes` ahead (0: answers without nextUpdate).
    pub fn start(
        dir: &Path,
        ca: &Issued,
        good: &[&X509],
        revoked: &[&X509],
        next_minutes: u32,
    ) -> OcspResponder {
        Self::start_at(dir, ca, good, revoked, next_minutes, free_addr())
    }

    /// Like [`OcspResponder::start`], on a port chosen before (certificates name it).
    pub fn start_at(
        dir: &Path,
        ca: &Issued,
        good: &[&X509],
        revoked: &[&X509],
        next_minutes: u32,
        addr: SocketAddr,
    ) -> OcspResponder {
        let mut s = spec(&[("O", "certgate tests"), ("CN", "OCSP responder")]);
        s.client_auth = false;
        s.ocsp_signing = true;
        let signer = pki::issue(&s, ca).unwrap();
        write(&dir.join("ocsp-signer.pem"), &cert_pem(&signer));
        write(&dir.join("ocsp-signer-key.pem"), &key_pem(&signer));
        write(&dir.join("ocsp-ca.pem"), &cert_pem(ca));
        let index = dir.join("ocsp-index.txt");
        let out = dir.join("ocsp-responder.log");
        let mut r = OcspResponder {
            addr,
            child: Command::new("true").spawn().unwrap(),
            index,
            out,
        };
        r.set(good, revoked);
        r.child = Command::new("openssl")
            .arg("ocsp")
            .arg("-index")
            .arg(&r.index)
            .args(["-port", &addr.port().to_string()])
            .arg("-rsigner")
            .arg(dir.join("ocsp-signer.pem"))
            .arg("-rkey")
            .arg(dir.join("ocsp-signer-key.pem"))
            .arg("-CA")
            .arg(dir.join("ocsp-ca.pem"))
            .args(if next_minutes > 0 {
                vec!["-nmin".to_string(), next_minutes.to_string()]
            } else {
                vec![]
            })
            .arg("-ignore_err")
            .stdout(Stdio::null())
            // It logs each request's first line on stderr, unbuffered.
            .stderr(std::fs::File::create(&r.out).unwrap())
            .spawn()
            .unwrap();
        // A probe must be a whole HTTP request: the responder serves one connection at a time
        // and waits forever on one that closes without a request.
        wait_for("the OCSP responder", Duration::from_secs(10), || {
            use std::io::{Read, Write};
            let mut s =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out.starts_with(b"HTTP/").then_some(())
        });
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Rewrites the index: `good` valid, `revoked` revoked (atomically, so the responder never
    /// reads half of it).
    pub fn set(&self, good: &[&X509], revoked: &[&X509]) {
        let mut text = String::new();
        // Each line's subject is made unique: `openssl ocsp` refuses an index with two equal
        // subjects (its CA database default) and exits.
        for c in good {
            text.push_str(&format!(
                "V\t491231235959Z\t\t{0}\tunknown\t/CN=good-{0}\n",
                serial_hex(c)
            ));
        }
        for c in revoked {
            text.push_str(&format!(
                "R\t491231235959Z\t260101000000Z\t{0}\tunknown\t/CN=revoked-{0}\n",
                serial_hex(c)
            ));
        }
        let tmp = self.index.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.index).unwrap();
    }

    /// OCSP requests (POSTs) the responder has received so far.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .matches("1st line: POST")
            .count()
    }
}
