//! Trust material of one listener: the server certificate it presents and the client CA bundle
//! and CRLs it verifies against. A [`TrustState`] is built whole from files and validated before
//! anyone sees it; the acceptor reads the current one from an `ArcSwap` on every handshake, so a
//! reload is one pointer swap and a broken file never replaces a good state.
//!
//! Everything a state is built from is an argument of [`TrustState::load`]: the config, the
//! CRLs fetched for it, and the [`Revocation`] it tells of issuers it sees. CRLs whose issuer is
//! not in the bundle are checked on first use (`crl_issuer`).

mod crl_issuer;
pub(crate) mod purpose;
mod rollback;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509CrlRef, X509Name, X509Ref, X509StoreContext, X509};

use crate::config::{CrlExpired, HttpUrl, TlsConfig};
use crate::time::{asn1_unix, now_unix};
use crate::tls::coverage::{ChainsSeen, Position};
use crate::tls::dn::rfc2253;
use crate::tls::resumption::FileTicketKeys;
use crate::tls::revocation::Revocation;
use crate::tls::verify::AuthFailure;
pub use crl_issuer::CrlSignature;
use crl_issuer::DeferredCrls;

/// Where trust material came from: a file, or (a fetched CRL) the URL it was fetched from.
/// Shown as the path or the URL, so `/status`, `check` and the logs name either as they would
/// a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(HttpUrl),
}

impl Source {
    /// The path, when this is a file.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Source::File(p) => Some(p),
            Source::Url(_) => None,
        }
    }

    /// The URL, when this is a fetched CRL.
    pub fn url(&self) -> Option<&HttpUrl> {
        match self {
            Source::File(_) => None,
            Source::Url(u) => Some(u),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => p.display().fmt(f),
            Source::Url(u) => u.fmt(f),
        }
    }
}

/// A trust-material problem: which file (or fetched CRL), and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct TrustError {
    // Not `source`: thiserror would take a field of that name for the underlying error.
    pub origin: Source,
    pub message: String,
}

fn terr(file: &Path, message: impl Into<String>) -> TrustError {
    terr_at(&Source::File(file.to_path_buf()), message)
}

fn terr_at(origin: &Source, message: impl Into<String>) -> TrustError {
    TrustError {
        origin: origin.clone(),
        message: message.into(),
    }
}

/// A CRL fetched over HTTP(S): its URL and the body last fetched successfully.
#[derive(Clone, Debug)]
pub struct FetchedCrl {
    pub url: HttpUrl,
    pub body: Arc<Vec<u8>>,
}

/// A file as it was read, for `/status` and `check`.
#[derive(Clone, Debug)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// The server certificate chain and its key.
pub struct ServerCert {
    pub cert: X509,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// One loaded CRL: signed by a CA of the bundle (checked at load), or by an issuer clients
/// present in their chains (checked on first use, see `crl_issuer`).
pub struct LoadedCrl {
    pub crl: X509Crl,
    /// `tls.crl` file or fetched URL.
    pub source: Source,
    pub signature: CrlSignature,
    pub issuer_dn: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub revoked_count: usize,
}

impl LoadedCrl {
    pub fn is_expired(&self, now: i64) -> bool {
        self.next_update.is_some_and(|n| n < now)
    }
}

/// The client CA bundle and the CRLs of its CAs.
pub struct ClientTrust {
    pub store: X509Store,
    pub ca_certs: Vec<X509>,
    pub ca_names: Vec<X509Name>,
    /// CRLs verified at load, keyed by the SHA-256 of their issuing CA certificate.
    crls_by_issuer: HashMap<[u8; 32], Vec<usize>>,
    /// CRLs whose issuer is not in the bundle, with the verdicts reached per issuer certificate.
    deferred: DeferredCrls,
    pub crls: Vec<LoadedCrl>,
}

/// Everything one listener trusts and presents, at one moment.
pub struct TrustState {
    /// Increases with every successful reload; connections re-check their chain when it moved.
    pub generation: u64,
    pub server: ServerCert,
    pub client: Option<ClientTrust>,
    pub crl_expired: CrlExpired,
    pub files: Vec<LoadedFile>,
    pub loaded_at: SystemTime,
    /// `tls.session_ticket_keys`: ticket keys shared by the replicas, read with the rest so a
    /// broken key file is refused like any broken trust file (the old keys keep serving).
    pub ticket_keys: Option<Arc<FileTicketKeys>>,
    /// Shared by every generation of the listener (see [`crate::tls::coverage`]).
    pub seen: Arc<ChainsSeen>,
    /// Told of each issuer the listener sees for the first time (a fetched CRL may wait for
    /// it); the same for every generation.
    revocation: Arc<Revocation>,
}

pub fn sha256_der(cert: &X509Ref) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(d) = cert.digest(MessageDigest::sha256()) {
        out.copy_from_slice(&d);
    }
    out
}

/// Reads the file of config key `key`; a file that cannot be read names the key and the fix.
fn read(path: &Path, key: &str, files: &mut Vec<LoadedFile>) -> Result<Vec<u8>, TrustError> {
    let bytes = std::fs::read(path).map_err(|e| {
        let fix = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "; check the path (a relative one is read from the config file's directory)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; let the user certgate runs as read it (and the directories above it)"
            }
            _ => "",
        };
        terr(path, format!("{key}: cannot read: {e}{fix}"))
    })?;
    files.push(LoadedFile {
        path: path.to_path_buf(),
        sha256: hex::encode(openssl::sha::sha256(&bytes)),
    });
    Ok(bytes)
}

impl TrustState {
    /// The first trust state of listener `listener`: every file of `tls` loaded and
    /// cross-checked, with the CRLs `fetched` for it (see [`Revocation::fetched_for`]; none for
    /// `check` and `explain`, which do not fetch). They are an argument, not read here, so a
    /// build sees exactly the CRLs its caller chose under the build lock. `revocation` is told
    /// of the issuers the listener's clients present; every later generation tells the same.
    pub fn load(
        tls: &TlsConfig,
        listener: &str,
        fetched: &[FetchedCrl],
        revocation: &Arc<Revocation>,
    ) -> Result<TrustState, TrustError> {
        let ocsp_covers_leaf = tls.ocsp.mode != crate::config::OcspMode::Off;
        let seen = Arc::new(ChainsSeen::new(listener, tls.crl_check, ocsp_covers_leaf));
        Self::build(tls, fetched, 1, seen, revocation.clone())
    }

    /// The next generation after this one, from the files as they are now and the CRLs
    /// `fetched` for it. It shares no trust material with this state, only what the listener
    /// has seen of clients.
    pub fn reload(
        &self,
        tls: &TlsConfig,
        fetched: &[FetchedCrl],
    ) -> Result<TrustState, TrustError> {
        let mut next = Self::build(
            tls,
            fetched,
            self.generation + 1,
            self.seen.clone(),
            self.revocation.clone(),
        )?;
        if let (Some(current), Some(following)) = (&self.client, &next.client) {
            rollback::check(current, following, &self.seen)?;
        }
        // Unchanged ticket keys stay the keys loaded before, so `/status` tells their age, not
        // the time of the last CRL reload.
        let hash = |files: &[LoadedFile], path: &Path| {
            files
                .iter()
                .find(|f| f.path == path)
                .map(|f| f.sha256.clone())
        };
        if let (Some(path), Some(old)) = (&tls.session_ticket_keys, &self.ticket_keys) {
            if next.ticket_keys.is_some()
                && hash(&self.files, path).is_some()
                && hash(&self.files, path) == hash(&next.files, path)
            {
                next.ticket_keys = Some(old.clone());
            }
        }
        Ok(next)
    }

    fn build(
        tls: &TlsConfig,
        fetched: &[FetchedCrl],
        generation: u64,
        seen: Arc<ChainsSeen>,
        revocation: Arc<Revocation>,
    ) -> Result<TrustState, TrustError> {
        let mut files = Vec::new();
        let server = load_server(&tls.cert, &tls.key, &mut files)?;
        let client = match &tls.client_ca {
            None => None,
            Some(ca) => Some(load_client_trust(ca, &tls.crl, fetched, &mut files)?),
        };
        let ticket_keys = match &tls.session_ticket_keys {
            Some(path) if tls.session_lifetime.is_some() => {
                let bytes = read(path, "tls.session_ticket_keys", &mut files)?;
                let keys = FileTicketKeys::parse(&bytes)
                    .map_err(|m| terr(path, format!("tls.session_ticket_keys: {m}")))?;
                Some(Arc::new(keys))
            }
            _ => None,
        };
        Ok(TrustState {
            generation,
            server,
            client,
            ticket_keys,
            crl_expired: tls.crl_expired,
            files,
            loaded_at: SystemTime::now(),
            seen,
            revocation,
        })
    }

    /// The revocation and CRL-freshness check of a verified chain (leaf first, as OpenSSL built
    /// it, ending at the trust anchor). Each certificate below the anchor is checked against the
    /// CRLs of its issuer; one whose issuer has none is covered or refused as `tls.crl_check`
    /// says, and the gap is recorded either way.
    pub fn check_revocation<'a>(
        &self,
        chain: impl IntoIterator<Item = &'a X509Ref>,
    ) -> Result<(), AuthFailure> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        if client.crls.is_empty() && self.seen.checks_nothing() {
            return Ok(());
        }
        let now = now_unix();
        let chain: Vec<&X509Ref> = chain.into_iter().collect();
        for (depth, pair) in chain.windows(2).enumerate() {
            let (cert, issuer) = (pair[0], pair[1]);
            let key = sha256_der(issuer);
            if self.seen.remember_issuer(key, issuer) {
                self.revocation.issuer_seen(&rfc2253(issuer.subject_name()));
            }
            let deferred = if client.deferred.is_empty() {
                None
            } else {
                Some(client.deferred.for_issuer(&client.crls, issuer, key)?)
            };
            let at_load = client
                .crls_by_issuer
                .get(&key)
                .map_or(&[][..], Vec::as_slice);
            let mut covered = false;
            for &i in at_load.iter().chain(deferred.iter().flat_map(|d| d.iter())) {
                covered = true;
                let loaded = &client.crls[i];
                if loaded.is_expired(now) && self.crl_expired == CrlExpired::Reject {
                    return Err(AuthFailure::CrlExpired);
                }
                if is_revoked(&loaded.crl, cert) {
                    return Err(AuthFailure::Revoked);
                }
            }
            let position = if depth == 0 {
                Position::Leaf
            } else {
                Position::Intermediate
            };
            if !covered && self.seen.uncovered(issuer, position) {
                return Err(AuthFailure::RevocationUnknown);
            }
        }
        Ok(())
    }

    /// Re-verifies a chain accepted under an older state against this one: still chains to
    /// the (possibly new) CA bundle, still within validity, not revoked by the current CRLs.
    pub fn reverify(&self, chain: &[X509]) -> Result<(), AuthFailure> {
        self.verified_chain(chain).map(|_| ())
    }

    /// Verifies `chain` (leaf first, the rest as untrusted intermediates) against the current
    /// CA bundle and CRLs, as a handshake would; returns the chain OpenSSL built.
    pub fn verified_chain(&self, chain: &[X509]) -> Result<Vec<X509>, AuthFailure> {
        let Some(client) = &self.client else {
            return Err(AuthFailure::UnknownCa);
        };
        let Some((leaf, rest)) = chain.split_first() else {
            return Err(AuthFailure::NoCertificate);
        };
        let mut untrusted = Stack::new().map_err(|_| AuthFailure::BadCertificate)?;
        for c in rest {
            untrusted
                .push(c.clone())
                .map_err(|_| AuthFailure::BadCertificate)?;
        }
        let mut ctx = X509StoreContext::new().map_err(|_| AuthFailure::BadCertificate)?;
        let verdict = ctx
            .init(&client.store, leaf, &untrusted, |c| {
                let ok = c.verify_cert()?;
                let chain: Vec<X509> = c
                    .chain()
                    .map(|s| s.iter().map(|x| x.to_owned()).collect())
                    .unwrap_or_default();
                Ok((ok, c.error().as_raw(), chain))
            })
            .map_err(|_| AuthFailure::BadCertificate)?;
        match verdict {
            (true, _, new_chain) => {
                self.check_revocation(new_chain.iter().map(|c| c.as_ref()))?;
                Ok(new_chain)
            }
            (false, code, _) => Err(AuthFailure::from_verify_code(code)),
        }
    }

    /// True while any loaded CRL is past its nextUpdate (`/readyz` turns 503).
    pub fn has_expired_crl(&self) -> bool {
        let now = now_unix();
        self.client
            .as_ref()
            .is_some_and(|c| c.crls.iter().any(|crl| crl.is_expired(now)))
    }
}

fn is_revoked(crl: &X509CrlRef, cert: &X509Ref) -> bool {
    use openssl::x509::CrlStatus;
    // get_by_cert wants an owned handle; to_owned is a reference-count increment.
    !matches!(crl.get_by_cert(&cert.to_owned()), CrlStatus::NotRevoked)
}

fn load_server(
    cert: &Path,
    key: &Path,
    files: &mut Vec<LoadedFile>,
) -> Result<ServerCert, TrustError> {
    let pem = read(cert, "tls.cert", files)?;
    let mut certs = X509::stack_from_pem(&pem)
        .map_err(|e| terr(cert, format!("not a PEM certificate chain ({e}); the file must hold `-----BEGIN CERTIFICATE-----` blocks, leaf first")))?;
    if certs.is_empty() {
        return Err(terr(cert, "holds no certificate; put the server certificate (leaf first, then intermediates) in PEM"));
    }
    let leaf = certs.remove(0);
    let key_pem = read(key, "tls.key", files)?;
    let key_text = String::from_utf8_lossy(&key_pem);
    if key_text.contains("ENCRYPTED") {
        return Err(terr(
            key,
            format!(
                "the private key is encrypted; certgate needs it unencrypted (mode 0600): decrypt it with `(umask 077; openssl pkey -in {0} -out {0}.plain)` and point tls.key at the result",
                key.display()
            ),
        ));
    }
    let pkey = PKey::private_key_from_pem(&key_pem).map_err(|e| {
        terr(
            key,
            format!(
                "not a PEM private key ({e}); PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys are accepted"
            ),
        )
    })?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(purpose::key_mismatch(cert, key, &leaf, &certs, &pkey));
    }
    Ok(ServerCert {
        cert: leaf,
        chain: certs,
        key: pkey,
    })
}

fn load_client_trust(
    ca: &Path,
    crl_files: &[PathBuf],
    fetched: &[FetchedCrl],
    files: &mut Vec<LoadedFile>,
) -> Result<ClientTrust, TrustError> {
    let pem = read(ca, "tls.client_ca", files)?;
    let ca_certs =
        X509::stack_from_pem(&pem).map_err(|e| terr(ca, format!("not a PEM CA bundle ({e})")))?;
    if ca_certs.is_empty() {
        return Err(terr(
            ca,
            "holds no certificate; put the client CA certificates (roots and intermediates) in PEM",
        ));
    }
    purpose::check_client_ca(ca, &ca_certs)?;
    let mut builder = X509StoreBuilder::new().map_err(|e| terr(ca, e.to_string()))?;
    for c in &ca_certs {
        builder
            .add_cert(c.clone())
            .map_err(|e| terr(ca, format!("cannot add {}: {e}", rfc2253(c.subject_name()))))?;
    }
    // Every certificate of the bundle is a trust anchor, so a bundle may hold just the issuing
    // intermediate, as operators expect from "the CAs I trust".
    builder
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(|e| terr(ca, e.to_string()))?;
    let store = builder.build();
    let ca_names = ca_certs
        .iter()
        .filter_map(|c| c.subject_name().to_owned().ok())
        .collect();

    let mut crls = Vec::new();
    let mut crls_by_issuer: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    let mut deferred = DeferredCrls::default();
    let mut sources = Vec::new();
    for file in crl_files {
        sources.push((Source::File(file.clone()), read(file, "tls.crl", files)?));
    }
    // A fetched CRL goes through exactly what a file CRL does; only its source differs.
    for f in fetched {
        sources.push((Source::Url(f.url.clone()), f.body.to_vec()));
    }
    for (source, bytes) in &sources {
        for crl in parse_crls(bytes).map_err(|m| terr_at(source, m))? {
            let named: Vec<&X509> = ca_certs
                .iter()
                .filter(|c| {
                    c.subject_name().try_cmp(crl.issuer_name()).ok()
                        == Some(std::cmp::Ordering::Equal)
                })
                .collect();
            let signer = named
                .iter()
                .find(|c| c.public_key().and_then(|k| crl.verify(&k)).unwrap_or(false));
            // Its issuer is in the bundle, so its signature can be checked now, and must be.
            if signer.is_none() && !named.is_empty() {
                return Err(terr_at(
                    source,
                    format!(
                        "the CRL of {} is not signed by the key of that CA in {}; replace the CRL with one the CA signed",
                        rfc2253(crl.issuer_name()),
                        ca.display()
                    ),
                ));
            }
            let index = crls.len();
            let signature = match signer {
                Some(issuer) => {
                    crls_by_issuer
                        .entry(sha256_der(issuer))
                        .or_default()
                        .push(index);
                    CrlSignature::AtLoad
                }
                // An issuer clients present in their chains (an intermediate under a root of
                // the bundle): verified against that certificate when a chain brings it.
                None => {
                    deferred.push(index);
                    CrlSignature::Deferred(Default::default())
                }
            };
            crls.push(LoadedCrl {
                issuer_dn: rfc2253(crl.issuer_name()),
                this_update: asn1_unix(crl.last_update()),
                next_update: crl.next_update().map(asn1_unix),
                revoked_count: crl.get_revoked().map(|r| r.len()).unwrap_or(0),
                source: source.clone(),
                signature,
                crl,
            });
        }
    }
    Ok(ClientTrust {
        store,
        ca_certs,
        ca_names,
        crls_by_issuer,
        deferred,
        crls,
    })
}

/// A CRL file is PEM (one or more `X509 CRL` blocks) or a single DER CRL.
pub(crate) fn parse_crls(bytes: &[u8]) -> Result<Vec<X509Crl>, String> {
    const BEGIN: &str = "-----BEGIN X509 CRL-----";
    const END: &str = "-----END X509 CRL-----";
    let Ok(text) = std::str::from_utf8(bytes) else {
        return X509Crl::from_der(bytes)
            .map(|c| vec![c])
            .map_err(|e| format!("not a PEM or DER CRL ({e})"));
    };
    if !text.contains(BEGIN) {
        return X509Crl::from_der(bytes)
            .map(|c| vec![c])
            .map_err(|e| format!("not a PEM or DER CRL ({e}); expected `{BEGIN}` blocks"));
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end) = rest[start..].find(END) else {
            return Err(format!("a CRL block has no `{END}` line"));
        };
        let block = &rest[start..start + end + END.len()];
        out.push(
            X509Crl::from_pem(block.as_bytes())
                .map_err(|e| format!("a CRL block does not parse ({e})"))?,
        );
        rest = &rest[start + end + END.len()..];
    }
    Ok(out)
}
