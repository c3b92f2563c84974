//! `certgate pki init | issue | revoke`: a development PKI in one directory.
//!
//! Layout: `ca.pem`, `ca-key.pem` (root CA, ECDSA P-256, 10 years), `server.pem`,
//! `server-key.pem` (serverAuth, SANs from `--name`), `crl.pem` (the CA's CRL, next update in
//! a year), and `NAME.pem` / `NAME-key.pem` per client. Keys are PKCS#8 PEM with mode 0600.
//! Nothing existing is overwritten except `crl.pem`, which `revoke` rewrites atomically.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use openssl::x509::{X509Crl, X509};

use super::crl::{contains, make_crl_entries, read_crl_entries, RevokedEntry};
use super::files::{load_issued, write_cert_pem, write_crl_pem, write_key_pem};
use super::{issue, now_unix, self_signed_ca, CertSpec, Issued, KeyKind};
use crate::tls::dn::rfc2253;

const CA_DAYS: i64 = 3650;
/// The server certificate's whole validity, notBefore to notAfter: Mozilla's "intermediate"
/// TLS profile allows at most 366 days (sslyze's compliance check flags more), which also
/// keeps under the CA/Browser Forum's 397-day ceiling that Apple platforms and Chrome enforce.
const SERVER_DAYS: i64 = 366;
/// The server certificate's notBefore, in days from now: backdated for clocks that lag ours.
const SERVER_BACKDATE_DAYS: i64 = 1;
const CRL_DAYS: i64 = 365;
/// lastUpdate of a CRL we write: a little in the past, for clocks that lag ours.
const CRL_BACKDATE_SECS: i64 = 300;
const RESERVED: [&str; 5] = ["ca", "ca-key", "server", "server-key", "crl"];

fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    for p in paths {
        if p.exists() {
            bail!(
                "{} already exists: refusing to overwrite it (delete it, or use another --dir / --out)",
                p.display()
            );
        }
    }
    Ok(())
}

fn load_ca(dir: &Path) -> anyhow::Result<Issued> {
    load_issued(&dir.join("ca.pem"), &dir.join("ca-key.pem")).with_context(|| {
        format!(
            "no usable CA in {} (create one with `certgate pki init --dir {}`)",
            dir.display(),
            dir.display()
        )
    })
}

fn expiry(cert: &X509) -> String {
    cert.not_after().to_string()
}

/// Root CA, server certificate for `names` (DNS or IP SANs; default `localhost`, `127.0.0.1`)
/// and an empty CRL in `dir`.
pub fn init(dir: &Path, org: Option<&str>, names: &[String]) -> anyhow::Result<()> {
    let names: Vec<String> = if names.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        names.to_vec()
    };
    let (dns, ips) = server_names(&names)?;
    let org = org.unwrap_or("certgate");
    if org.is_empty() || org.contains('\0') {
        bail!("--org must be a non-empty name");
    }

    let paths = [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "crl.pem",
    ]
    .map(|f| dir.join(f));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    refuse_existing(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;

    // Each CA gets a name of its own, as mkcert's do: two dev PKIs in one bundle (or a CRL
    // checked against the wrong one) then say which CA they mean instead of sharing a name.
    let mut id = [0u8; 4];
    openssl::rand::rand_bytes(&mut id)?;
    let ca = self_signed_ca(&CertSpec {
        subject: vec![
            ("O".into(), org.into()),
            (
                "CN".into(),
                format!("{org} development CA {}", hex::encode(id)),
            ),
        ],
        key: KeyKind::EcdsaP256,
        is_ca: true,
        client_auth: false,
        server_auth: false,
        eku: false,
        not_before_days: -1,
        not_after_days: CA_DAYS,
        ..CertSpec::default()
    })?;
    let server = issue(
        &CertSpec {
            subject: vec![
                ("O".into(), org.into()),
                ("CN".into(), names[0].trim().to_string()),
            ],
            key: KeyKind::EcdsaP256,
            is_ca: false,
            client_auth: false,
            server_auth: true,
            eku: true,
            dns_names: dns,
            ip_addrs: ips,
            not_before_days: -SERVER_BACKDATE_DAYS,
            not_after_days: SERVER_DAYS - SERVER_BACKDATE_DAYS,
            ..CertSpec::default()
        },
        &ca,
    )?;
    let now = now_unix();
    let crl = make_crl_entries(
        &ca,
        &[],
        now - CRL_BACKDATE_SECS,
        now + CRL_DAYS * 86_400,
        1,
    )?;

    let [ca_pem, ca_key, server_pem, server_key, crl_pem] = &paths;
    write_key_pem(ca_key, &ca.key)?;
    write_cert_pem(ca_pem, &ca.cert)?;
    write_key_pem(server_key, &server.key)?;
    write_cert_pem(server_pem, &server.cert)?;
    write_crl_pem(crl_pem, &crl)?;

    print_init(&paths, &ca, &server, &names, &crl);
    Ok(())
}

/// The server certificate's names split into DNS names and IP addresses.
fn server_names(names: &[String]) -> anyhow::Result<(Vec<String>, Vec<IpAddr>)> {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for n in names {
        let n = n.trim();
        if n.is_empty() || n.contains(['\0', '/', ' ', ',']) {
            bail!("--name {n:?}: expected a host name or an IP address");
        }
        match n.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(n.to_string()),
        }
    }
    Ok((dns, ips))
}

/// What `pki init` wrote, one line a file.
fn print_init(paths: &[PathBuf; 5], ca: &Issued, server: &Issued, names: &[String], crl: &X509Crl) {
    let [ca_pem, ca_key, server_pem, server_key, crl_pem] = paths;
    println!(
        "wrote {}  CA {}, until {}",
        ca_pem.display(),
        rfc2253(ca.cert.subject_name()),
        expiry(&ca.cert)
    );
    println!(
        "wrote {}  CA key (keep it private: it signs every certificate)",
        ca_key.display()
    );
    println!(
        "wrote {}  server {}, names {}, until {}",
        server_pem.display(),
        rfc2253(server.cert.subject_name()),
        names.join(", "),
        expiry(&server.cert)
    );
    println!("wrote {}  server key", server_key.display());
    println!(
        "wrote {}  empty CRL, next update {}",
        crl_pem.display(),
        crl.next_update().map(|t| t.to_string()).unwrap_or_default()
    );
}

/// `cn` made into a file name: `A-Za-z0-9._-` kept, everything else `_`.
fn file_name_for(cn: &str) -> String {
    let s: String = cn
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "client".into()
    } else {
        s
    }
}

/// A client certificate (clientAuth EKU) for `cn` with one O per `orgs` entry and an optional
/// OU, valid `days` days: `NAME.pem` and `NAME-key.pem` in `dir` (NAME = `out` or `cn` made
/// file-safe). Returns the certificate's path.
pub fn issue_client(
    dir: &Path,
    cn: &str,
    orgs: &[String],
    ou: Option<&str>,
    days: u32,
    out: Option<&str>,
) -> anyhow::Result<PathBuf> {
    issue_client_with_uris(dir, cn, orgs, ou, &[], days, out)
}

/// [`issue_client`] with URI SANs (`--uri`, e.g. a SPIFFE ID). A `spiffe:` URI must be a valid
/// SPIFFE ID: certgate would give an invalid one no `spiffe:` grant, so it is refused here
/// rather than discovered as a 403 later.
pub fn issue_client_with_uris(
    dir: &Path,
    cn: &str,
    orgs: &[String],
    ou: Option<&str>,
    uris: &[String],
    days: u32,
    out: Option<&str>,
) -> anyhow::Result<PathBuf> {
    for uri in uris {
        if uri.is_empty() || !uri.is_ascii() || uri.contains(['\0', ' ']) || !uri.contains(':') {
            bail!("--uri {uri:?}: expected an absolute ASCII URI such as spiffe://example.org/ns/ci/sa/builder");
        }
        if uri
            .split_once(':')
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("spiffe"))
        {
            if let Err(why) = crate::policy::spiffe::parse_id(uri) {
                bail!("--uri {uri:?} is not a valid SPIFFE ID ({why}); write spiffe://trust-domain/path with a lower-case trust domain and segments of A-Z a-z 0-9 . - _");
            }
        }
    }
    if cn.is_empty() {
        bail!("--cn must not be empty");
    }
    if days == 0 {
        bail!("--days must be at least 1");
    }
    for v in std::iter::once(cn)
        .chain(orgs.iter().map(String::as_str))
        .chain(ou)
    {
        if v.contains('\0') {
            bail!("{v:?}: a NUL byte makes the certificate unusable");
        }
    }
    let name = match out {
        Some(o) => {
            let o = o.strip_suffix(".pem").unwrap_or(o);
            if o.is_empty() || o.starts_with('.') || o.contains(['/', '\\', '\0']) {
                bail!("--out {o:?}: expected a plain file name such as `jenkins`");
            }
            o.to_string()
        }
        None => file_name_for(cn),
    };
    if RESERVED.contains(&name.as_str()) {
        bail!("--out {name:?} would overwrite the PKI's own files; choose another name");
    }
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    let ca = load_ca(dir)?;
    refuse_existing(&[&cert_path, &key_path])?;

    let mut subject: Vec<(String, String)> =
        orgs.iter().map(|o| ("O".to_string(), o.clone())).collect();
    if let Some(ou) = ou {
        subject.push(("OU".into(), ou.into()));
    }
    subject.push(("CN".into(), cn.into()));
    let client = issue(
        &CertSpec {
            subject,
            key: KeyKind::EcdsaP256,
            is_ca: false,
            client_auth: true,
            server_auth: false,
            eku: true,
            not_before_days: -1,
            not_after_days: i64::from(days),
            uris: uris.to_vec(),
            ..CertSpec::default()
        },
        &ca,
    )?;
    write_key_pem(&key_path, &client.key)?;
    write_cert_pem(&cert_path, &client.cert)?;
    let serial = client
        .cert
        .serial_number()
        .to_bn()?
        .to_hex_str()?
        .to_string();
    println!(
        "wrote {}  {} (serial {serial}), until {}",
        cert_path.display(),
        rfc2253(client.cert.subject_name()),
        expiry(&client.cert)
    );
    println!("wrote {}  its key", key_path.display());
    Ok(cert_path)
}

fn read_cert(path: &Path) -> anyhow::Result<X509> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .with_context(|| format!("{}: not a PEM or DER certificate", path.display()))
}

fn read_crl(path: &Path) -> anyhow::Result<X509Crl> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    X509Crl::from_pem(&bytes)
        .or_else(|_| X509Crl::from_der(&bytes))
        .with_context(|| format!("{}: not a PEM or DER CRL", path.display()))
}

/// Adds `cert` to the CA's CRL in `dir` (keeping every earlier entry), bumps the CRL number and
/// rewrites `crl.pem` atomically. Revoking an already revoked certificate changes nothing.
pub fn revoke(dir: &Path, cert: &Path) -> anyhow::Result<()> {
    let ca = load_ca(dir)?;
    let target = read_cert(cert)?;
    let ca_key = ca.cert.public_key()?;
    let signed_by_ca = target.verify(&ca_key).unwrap_or(false);
    let same_issuer =
        target.issuer_name().try_cmp(ca.cert.subject_name())? == std::cmp::Ordering::Equal;
    if !(signed_by_ca && same_issuer) {
        bail!(
            "{} was not issued by the CA in {} (its issuer is {})",
            cert.display(),
            dir.join("ca.pem").display(),
            rfc2253(target.issuer_name())
        );
    }

    let crl_path = dir.join("crl.pem");
    let (mut entries, number) = if crl_path.exists() {
        let old = read_crl(&crl_path)?;
        if !old.verify(&ca_key).unwrap_or(false) {
            bail!(
                "{} is not signed by the CA in {}: refusing to rewrite it",
                crl_path.display(),
                dir.display()
            );
        }
        read_crl_entries(&old)?
    } else {
        (Vec::new(), None)
    };

    let serial = target.serial_number().to_bn()?;
    let subject = rfc2253(target.subject_name());
    let serial_hex = serial.to_hex_str()?.to_string();
    if contains(&entries, &serial) {
        println!(
            "{} ({subject}, serial {serial_hex}) is already revoked; {} unchanged",
            cert.display(),
            crl_path.display()
        );
        return Ok(());
    }
    let now = now_unix();
    entries.push(RevokedEntry {
        serial,
        revoked_at: now,
    });
    let number = number
        .unwrap_or(0)
        .checked_add(1)
        .context("CRL number overflow")?;
    let crl = make_crl_entries(
        &ca,
        &entries,
        now - CRL_BACKDATE_SECS,
        now + CRL_DAYS * 86_400,
        number,
    )?;
    write_crl_pem(&crl_path, &crl)?;
    println!(
        "revoked {} ({subject}, serial {serial_hex}); wrote {}: {} revoked, CRL number {number}, next update {}",
        cert.display(),
        crl_path.display(),
        entries.len(),
        crl.next_update().map(|t| t.to_string()).unwrap_or_default()
    );
    Ok(())
}
