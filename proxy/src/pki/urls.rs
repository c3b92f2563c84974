//! Where a certificate says its revocation status lives: the CRL Distribution Points and the
//! Authority Information Access (OCSP) extensions, for test and demo PKIs.

use openssl::nid::Nid;
use openssl::x509::{X509Builder, X509Extension, X509Ref};

use super::CertSpec;

/// Appends the CDP and AIA extensions `spec` asks for.
pub(super) fn append(
    spec: &CertSpec,
    b: &mut X509Builder,
    issuer: Option<&X509Ref>,
) -> anyhow::Result<()> {
    let lists = [
        (Nid::CRL_DISTRIBUTION_POINTS, "URI:", &spec.crl_urls),
        (Nid::INFO_ACCESS, "OCSP;URI:", &spec.ocsp_urls),
    ];
    for (nid, prefix, urls) in lists {
        if urls.is_empty() {
            continue;
        }
        for u in urls {
            anyhow::ensure!(
                !u.contains(',') && !u.contains('\n'),
                "URL {u:?} cannot go into an extension"
            );
        }
        let value = urls
            .iter()
            .map(|u| format!("{prefix}{u}"))
            .collect::<Vec<_>>()
            .join(",");
        // The openssl crate has no builder for these two extensions; OpenSSL's own config
        // syntax (the one `openssl x509 -extfile` reads) encodes them, not hand-written DER.
        #[allow(deprecated)]
        let ext = X509Extension::new_nid(None, Some(&b.x509v3_context(issuer, None)), nid, &value)?;
        b.append_extension(ext)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::pki::{self, CertSpec};
    use crate::tls::revocation::discover::cdp_urls;

    #[test]
    fn cdp_and_aia_urls_are_written_and_read_back() {
        let mut s = CertSpec::with_subject(&[("CN", "URL CA")]);
        s.is_ca = true;
        let ca = pki::self_signed_ca(&s).unwrap();
        let mut s = CertSpec::with_subject(&[("CN", "leaf")]);
        s.crl_urls = vec![
            "http://pki.example.com/a.crl".into(),
            "ldap://pki.example.com/cn=a".into(),
        ];
        s.ocsp_urls = vec!["http://ocsp.example.com".into()];
        let leaf = pki::issue(&s, &ca).unwrap();
        // Only http(s) distribution points are fetched.
        assert_eq!(cdp_urls(&leaf.cert), vec!["http://pki.example.com/a.crl"]);
        let ocsp: Vec<String> = leaf
            .cert
            .ocsp_responders()
            .unwrap()
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(ocsp, vec!["http://ocsp.example.com"]);
        assert!(cdp_urls(&ca.cert).is_empty());
        s.crl_urls = vec!["http://x/a,b".into()];
        assert!(pki::issue(&s, &ca).is_err(), "a comma would split the URL");
    }
}
