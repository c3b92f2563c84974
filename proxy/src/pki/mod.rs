//! Development PKI on the `openssl` crate: a root CA, server and client certificates, CRLs
//! (`certgate pki init|issue|revoke`). The builder is deliberately flexible
//! ([`CertSpec`]) because the integration tests need odd certificates: expired, not yet valid,
//! without clientAuth, with NUL bytes or several CNs, RSA/Ed25519 keys, multi-valued RDNs.

mod commands;
mod crl;
mod files;

use std::ffi::CString;
use std::net::IpAddr;
use std::os::raw::c_int;

use anyhow::{bail, Context};
use foreign_types::ForeignType;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::symm::Cipher;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameRef, X509};
use openssl_sys as ffi;

pub use commands::{init, issue_client, issue_client_with_uris, revoke};
pub use crl::{make_crl, make_crl_entries, read_crl_entries, RevokedEntry};
pub use files::{load_issued, write_atomic, write_cert_pem, write_crl_pem, write_key_pem};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
    /// RSA with this many bits.
    Rsa(u32),
    Ed25519,
}

/// What to put in a certificate. `subject` is in encoding order (`[("O","x"),("CN","y")]` prints
/// as `CN=y,O=x`); keys are short names (`CN`, `O`, `OU`, `C`, `DC`, `UID`, `serialNumber`, …)
/// or dotted OIDs. A key starting with `+` (e.g. `"+UID"`) joins the previous entry into one
/// multi-valued RDN. Values are UTF-8 and may hold anything, NUL and control characters
/// included (tests need such certificates).
#[derive(Clone, Debug)]
pub struct CertSpec {
    pub subject: Vec<(String, String)>,
    pub key: KeyKind,
    pub is_ca: bool,
    pub client_auth: bool,
    pub server_auth: bool,
    /// false = no extended key usage extension at all. true with neither `client_auth` nor
    /// `server_auth` gives `emailProtection` only (an EKU that allows no TLS use).
    pub eku: bool,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
    /// Offsets from now, in days; may be negative (expired, not yet valid).
    pub not_before_days: i64,
    pub not_after_days: i64,
    /// CRL Distribution Point URLs (empty: no extension).
    pub crl_urls: Vec<String>,
    /// Authority Information Access OCSP responder URLs (empty: no extension).
    pub ocsp_urls: Vec<String>,
    /// Adds the OCSPSigning extended key usage (an OCSP responder's certificate).
    pub ocsp_signing: bool,
}

impl Default for CertSpec {
    /// An ECDSA P-256 client certificate (clientAuth), valid from yesterday for 30 days.
    fn default() -> CertSpec {
        CertSpec {
            subject: Vec::new(),
            key: KeyKind::EcdsaP256,
            is_ca: false,
            client_auth: true,
            server_auth: false,
            eku: true,
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
            not_before_days: -1,
            not_after_days: 30,
            crl_urls: Vec::new(),
            ocsp_urls: Vec::new(),
            ocsp_signing: false,
        }
    }
}

impl CertSpec {
    /// The default (client) spec with this subject, e.g. `&[("O", "ci"), ("CN", "jenkins")]`.
    pub fn with_subject(subject: &[(&str, &str)]) -> CertSpec {
        CertSpec {
            subject: subject
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..CertSpec::default()
        }
    }
}

/// A certificate and its private key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Clone for Issued {
    fn clone(&self) -> Issued {
        Issued {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field(
                "subject",
                &crate::tls::dn::rfc2253(self.cert.subject_name()),
            )
            .finish_non_exhaustive()
    }
}

/// Private key encodings, for tests of the key loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `BEGIN PRIVATE KEY`
    Pkcs8,
    /// `BEGIN RSA PRIVATE KEY` (RSA keys only)
    Pkcs1Rsa,
    /// `BEGIN EC PRIVATE KEY` (EC keys only)
    Sec1Ec,
    /// `BEGIN ENCRYPTED PRIVATE KEY`, AES-256-CBC with this passphrase
    EncryptedPkcs8(String),
}

/// The key as PEM in `format`. Fails when the format does not fit the key type.
pub fn key_pem(key: &PKeyRef<Private>, format: KeyFormat) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        KeyFormat::Pkcs8 => key.private_key_to_pem_pkcs8()?,
        KeyFormat::Pkcs1Rsa => key
            .rsa()
            .context("PKCS#1 needs an RSA key")?
            .private_key_to_pem()?,
        KeyFormat::Sec1Ec => key
            .ec_key()
            .context("SEC1 needs an EC key")?
            .private_key_to_pem()?,
        KeyFormat::EncryptedPkcs8(pass) => {
            key.private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), pass.as_bytes())?
        }
    })
}

pub fn generate_key(kind: &KeyKind) -> anyhow::Result<PKey<Private>> {
    Ok(match kind {
        KeyKind::EcdsaP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
        KeyKind::Rsa(bits) => PKey::from_rsa(Rsa::generate(*bits)?)?,
        KeyKind::Ed25519 => PKey::generate_ed25519()?,
    })
}

/// The signature digest for a signing key: SHA-256, none for Ed25519 (it hashes internally).
pub(crate) fn digest_for(key: &PKeyRef<Private>) -> MessageDigest {
    match key.id() {
        Id::ED25519 | Id::ED448 => MessageDigest::null(),
        _ => MessageDigest::sha256(),
    }
}

pub(crate) use crate::time::now_unix;

pub(crate) fn time_in_days(days: i64) -> anyhow::Result<Asn1Time> {
    let secs = days
        .checked_mul(86_400)
        .and_then(|s| s.checked_add(now_unix()))
        .context("validity offset out of range")?;
    Ok(Asn1Time::from_unix(secs as libc::time_t)?)
}

/// A random, positive, 16-byte serial (top bits `01`, so its DER is always exactly 16 bytes).
pub fn random_serial() -> anyhow::Result<Asn1Integer> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(BigNum::from_slice(&bytes)?.to_asn1_integer()?)
}

/// The subject as an X509_NAME (see [`CertSpec::subject`] for the `+` convention).
pub fn build_name(entries: &[(String, String)]) -> anyhow::Result<X509Name> {
    let name = openssl::x509::X509NameBuilder::new()?.build();
    for (i, (key, value)) in entries.iter().enumerate() {
        let (field, set) = match key.strip_prefix('+') {
            Some(field) if i > 0 => (field, -1),
            Some(_) => bail!("subject entry {key:?}: a `+` entry needs one before it"),
            None => (key.as_str(), 0),
        };
        let c_field = CString::new(field).with_context(|| format!("subject field {field:?}"))?;
        let len = c_int::try_from(value.len()).context("subject value too long")?;
        // SAFETY: `name` is an X509_NAME we own (built above, not shared); c_field is a
        // NUL-terminated string and value points to `len` readable bytes, both live for the call;
        // OpenSSL copies them into a new entry (loc -1 = append; set -1 = join the last RDN).
        let ok = unsafe {
            ffi::X509_NAME_add_entry_by_txt(
                name.as_ptr(),
                c_field.as_ptr(),
                ffi::MBSTRING_UTF8,
                value.as_ptr(),
                len,
                -1,
                set,
            )
        };
        if ok != 1 {
            let err = openssl::error::ErrorStack::get();
            bail!("subject entry {field}={value:?}: {err}");
        }
    }
    Ok(name)
}

/// A self-signed CA (or any self-signed certificate) from `spec`.
pub fn self_signed_ca(spec: &CertSpec) -> anyhow::Result<Issued> {
    let key = generate_key(&spec.key)?;
    let name = build_name(&spec.subject)?;
    let cert = build_cert(spec, &name, &key, None)?;
    Ok(Issued { cert, key })
}

/// A certificate for `spec`, signed by `issuer`: random 16-byte serial, SKI/AKI,
/// BasicConstraints and KeyUsage (critical), EKU and SAN as asked.
pub fn issue(spec: &CertSpec, issuer: &Issued) -> anyhow::Result<Issued> {
    let key = generate_key(&spec.key)?;
    let name = build_name(&spec.subject)?;
    let cert = build_cert(spec, &name, &key, Some(issuer))?;
    Ok(Issued { cert, key })
}

fn build_cert(
    spec: &CertSpec,
    subject: &X509NameRef,
    key: &PKeyRef<Private>,
    issuer: Option<&Issued>,
) -> anyhow::Result<X509> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer.map(|i| i.cert.subject_name()).unwrap_or(subject))?;
    b.set_pubkey(key)?;
    let not_before = time_in_days(spec.not_before_days)?;
    let not_after = time_in_days(spec.not_after_days)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;

    let mut bc = BasicConstraints::new();
    bc.critical();
    if spec.is_ca {
        bc.ca();
    }
    b.append_extension(bc.build()?)?;

    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if spec.is_ca {
        ku.key_cert_sign().crl_sign();
    } else if key.id() == Id::RSA {
        ku.key_encipherment();
    }
    b.append_extension(ku.build()?)?;

    if spec.eku {
        let mut eku = ExtendedKeyUsage::new();
        if spec.client_auth {
            eku.client_auth();
        }
        if spec.server_auth {
            eku.server_auth();
        }
        if spec.ocsp_signing {
            eku.other("OCSPSigning");
        }
        if !spec.client_auth && !spec.server_auth && !spec.ocsp_signing {
            eku.email_protection();
        }
        b.append_extension(eku.build()?)?;
    }

    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
    b.append_extension(aki)?;

    let has_san = !(spec.dns_names.is_empty()
        && spec.ip_addrs.is_empty()
        && spec.uris.is_empty()
        && spec.emails.is_empty());
    if has_san {
        let mut san = SubjectAlternativeName::new();
        // RFC 5280 4.2.1.6: with an empty subject the SAN is the identity and must be critical
        // (SPIFFE X.509-SVIDs from cert-manager's csi-driver-spiffe look like this).
        if spec.subject.is_empty() {
            san.critical();
        }
        for d in &spec.dns_names {
            san.dns(d);
        }
        for ip in &spec.ip_addrs {
            san.ip(&ip.to_string());
        }
        for u in &spec.uris {
            san.uri(u);
        }
        for e in &spec.emails {
            san.email(e);
        }
        let ext = san.build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
        b.append_extension(ext)?;
    }

    urls::append(spec, &mut b, issuer.map(|i| i.cert.as_ref()))?;

    let signer = issuer.map(|i| i.key.as_ref()).unwrap_or(key);
    b.sign(signer, digest_for(signer))?;
    Ok(b.build())
}

mod urls;

/// A CA for unit tests: self-signed, or issued by `issuer` (an intermediate).
#[cfg(test)]
pub fn test_ca(cn: &str, issuer: Option<&Issued>) -> Issued {
    let mut s = CertSpec::with_subject(&[("CN", cn)]);
    s.is_ca = true;
    s.client_auth = false;
    s.eku = false;
    match issuer {
        None => self_signed_ca(&s).expect("self-signed test CA"),
        Some(i) => issue(&s, i).expect("intermediate test CA"),
    }
}

#[cfg(test)]
mod tests;
