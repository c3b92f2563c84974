//! The Anka root token of a listener: a shared secret, so it is held in a type that can only be
//! built valid (at least 10 characters, as Anka requires), never prints through `Debug`, and
//! answers one question: does this `Authorization` header carry it?

use std::fmt;

use base64::Engine;

#[derive(Clone)]
pub struct RootToken {
    /// `root:<token>`, the decoded Basic credential a request must carry.
    credential: Vec<u8>,
}

impl RootToken {
    /// The shortest token accepted; Anka refuses shorter ones too.
    pub const MIN_CHARS: usize = 10;

    pub fn new(token: &str) -> Result<Self, &'static str> {
        if token.chars().count() < Self::MIN_CHARS {
            return Err("must be at least 10 characters (as Anka requires); use a longer secret, or remove the key");
        }
        Ok(RootToken {
            credential: format!("root:{token}").into_bytes(),
        })
    }

    /// `Authorization: Basic base64("root:" + token)`. The comparison is constant-time, so the
    /// answer's timing says nothing about how much of a guess was right.
    pub fn matches_authorization(&self, value: &[u8]) -> bool {
        let Some(encoded) = value.strip_prefix(b"Basic ").map(|v| v.trim_ascii()) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        decoded.len() == self.credential.len() && openssl::memcmp::eq(&decoded, &self.credential)
    }
}

impl fmt::Debug for RootToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credential: &str) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credential);
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn only_the_exact_root_credential_matches() {
        let token = RootToken::new("s3cret-token").unwrap();
        assert!(token.matches_authorization(&basic("root:s3cret-token")));
        assert!(token.matches_authorization(&[basic("root:s3cret-token"), b"  ".to_vec()].concat()));
        for wrong in [
            basic("root:s3cret-toke"),
            basic("root:s3cret-token "),
            basic("admin:s3cret-token"),
            basic("s3cret-token"),
            b"Bearer s3cret-token".to_vec(),
            b"basic cm9vdDpzM2NyZXQtdG9rZW4=".to_vec(),
            b"Basic !!!not-base64".to_vec(),
            b"Basic ".to_vec(),
            Vec::new(),
        ] {
            assert!(
                !token.matches_authorization(&wrong),
                "{:?}",
                String::from_utf8_lossy(&wrong)
            );
        }
    }

    #[test]
    fn short_tokens_are_refused_and_debug_never_shows_the_secret() {
        assert!(RootToken::new("short").is_err());
        assert!(RootToken::new("ten-chars!").is_ok());
        let token = RootToken::new("s3cret-token").unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
