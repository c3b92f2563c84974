//! Ticket keys: by default a ring of random keys held only in memory, rotated every session
//! lifetime, the previous one still decrypting (and asking for a fresh ticket) for one more
//! lifetime; or keys shared by every replica, read from `tls.session_ticket_keys`
//! ([`FileTicketKeys`]), where the first key encrypts and the others only decrypt.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;

/// The current ticket key and the one before it.
pub(super) struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
}

#[derive(Clone)]
pub(super) struct TicketKey {
    pub(super) name: [u8; 16],
    pub(super) aes: [u8; 32],
    pub(super) hmac: [u8; 32],
    created: Instant,
}

/// Key material never reaches a log or `/status` through a derived `Debug`.
impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

/// Bytes of one AES-256 key: 16 name, 32 HMAC-SHA256 secret, 32 AES-256 key.
const KEY_LEN: usize = 80;
/// Bytes of one AES-128 key (NGINX before 1.11.8, HAProxy's default build), refused.
const KEY_LEN_AES128: usize = 48;
/// More keys than any rotation scheme needs; a bigger file is a mistake (the wrong file).
const MAX_KEYS: usize = 64;

/// How to make a file certgate accepts, for error messages.
/// What is wrong with a ticket key file; every message ends with how to write a good one.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{} 48-byte (AES-128) key; certgate encrypts tickets with AES-256 only: {FIX}", match line { Some(n) => format!("line {n} is a"), None => "a".to_string() })]
    Aes128 { line: Option<usize> },
    #[error("key {key} has the same name (first 16 bytes) as an earlier key, so tickets could not say which key made them: {FIX}")]
    SameName { key: usize },
    #[error("malformed key: {FIX}")]
    Malformed,
    #[error("{len} bytes, neither one raw 80-byte key nor base64 text: {FIX}")]
    NotKeys { len: usize },
    #[error("line {line} is not base64 ({error}): {FIX}")]
    NotBase64 {
        line: usize,
        error: base64::DecodeError,
    },
    #[error("line {line} decodes to {len} bytes, not 80: {FIX}")]
    WrongLength { line: usize, len: usize },
    #[error("more than {MAX_KEYS} keys; keep the newest few: {FIX}")]
    TooMany,
    #[error("no key in the file: {FIX}")]
    Empty,
}

const FIX: &str = "write one 80-byte key (`openssl rand 80 > FILE`, NGINX's format) or base64 lines of 80-byte keys, newest first (`openssl rand 80 | openssl base64 -A`, HAProxy's format)";

/// Ticket keys shared by the replicas of a fleet, read from `tls.session_ticket_keys`: the
/// first key encrypts new tickets, every key decrypts, and a ticket decrypted with any key but
/// the first is renewed, so clients move to the first key.
#[derive(Debug)]
pub struct FileTicketKeys {
    keys: Vec<TicketKey>,
    pub loaded_at: SystemTime,
}

impl FileTicketKeys {
    /// Reads a key file, in either of two formats told apart by size:
    ///
    /// - exactly 80 bytes, not all printable text: one raw key, NGINX's
    ///   `ssl_session_ticket_key` layout (name, HMAC secret, AES key);
    /// - otherwise text, one base64 key per line, HAProxy's `tls-ticket-keys` format (each
    ///   80 bytes decoded: name, AES key, HMAC secret); blank lines and `#` comments are
    ///   skipped.
    ///
    /// The error says what is wrong and how to write a good file; the caller names the file.
    pub fn parse(bytes: &[u8]) -> Result<FileTicketKeys, KeyFileError> {
        // A text file can be 80 bytes too (a comment and a 48-byte key line): random key bytes
        // are all printable ASCII with a chance of about 1e-34, so such a file is read as text.
        let text = bytes
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        let keys = match bytes.len() {
            KEY_LEN if !text => vec![nginx_key(bytes)?],
            KEY_LEN_AES128 => return Err(KeyFileError::Aes128 { line: None }),
            _ => haproxy_keys(bytes)?,
        };
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.name == k.name) {
                return Err(KeyFileError::SameName { key: i + 1 });
            }
        }
        Ok(FileTicketKeys {
            keys,
            loaded_at: SystemTime::now(),
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key new tickets are encrypted with: the first.
    pub(super) fn for_encryption(&self) -> Option<&TicketKey> {
        self.keys.first()
    }

    /// The key named `name`, and whether the ticket should be renewed (not the first key).
    pub(super) fn for_decryption(&self, name: &[u8]) -> Option<(&TicketKey, bool)> {
        self.keys
            .iter()
            .position(|k| k.name == name)
            .map(|i| (&self.keys[i], i > 0))
    }
}

/// NGINX's 80-byte layout (`ngx_ssl_session_ticket_keys`): name, HMAC secret, AES key.
fn nginx_key(b: &[u8]) -> Result<TicketKey, KeyFileError> {
    key_of(&b[..16], &b[48..80], &b[16..48])
}

/// HAProxy's layout (`struct tls_sess_key_256`): name, AES key, HMAC secret.
fn haproxy_key(b: &[u8]) -> Result<TicketKey, KeyFileError> {
    key_of(&b[..16], &b[16..48], &b[48..80])
}

fn key_of(name: &[u8], aes: &[u8], hmac: &[u8]) -> Result<TicketKey, KeyFileError> {
    let bad = |_| KeyFileError::Malformed;
    Ok(TicketKey {
        name: name.try_into().map_err(bad)?,
        aes: aes.try_into().map_err(bad)?,
        hmac: hmac.try_into().map_err(bad)?,
        created: Instant::now(),
    })
}

fn haproxy_keys(bytes: &[u8]) -> Result<Vec<TicketKey>, KeyFileError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| KeyFileError::NotKeys { len: bytes.len() })?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = n + 1;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|e| KeyFileError::NotBase64 { line: n, error: e })?;
        match raw.len() {
            KEY_LEN => keys.push(haproxy_key(&raw)?),
            KEY_LEN_AES128 => return Err(KeyFileError::Aes128 { line: Some(n) }),
            len => return Err(KeyFileError::WrongLength { line: n, len }),
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyFileError::TooMany);
        }
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty);
    }
    Ok(keys)
}

impl TicketKey {
    fn random() -> Result<TicketKey, openssl::error::ErrorStack> {
        let mut k = TicketKey {
            name: [0; 16],
            aes: [0; 32],
            hmac: [0; 32],
            created: Instant::now(),
        };
        openssl::rand::rand_priv_bytes(&mut k.name)?;
        openssl::rand::rand_priv_bytes(&mut k.aes)?;
        openssl::rand::rand_priv_bytes(&mut k.hmac)?;
        Ok(k)
    }
}

impl TicketKeys {
    pub(super) fn new() -> Result<TicketKeys, openssl::error::ErrorStack> {
        Ok(TicketKeys {
            current: TicketKey::random()?,
            previous: None,
        })
    }

    /// The key to encrypt with, rotated once it is a lifetime old.
    pub(super) fn for_encryption(&mut self, lifetime: Duration) -> &TicketKey {
        if self.current.created.elapsed() >= lifetime {
            if let Ok(fresh) = TicketKey::random() {
                self.previous = Some(std::mem::replace(&mut self.current, fresh));
            }
        }
        &self.current
    }

    /// The key named `name`, and whether the ticket should be renewed (previous key).
    pub(super) fn for_decryption(
        &self,
        name: &[u8],
        lifetime: Duration,
    ) -> Option<(&TicketKey, bool)> {
        if self.current.name == name {
            return Some((&self.current, false));
        }
        // The previous key stops decrypting one lifetime after it was retired.
        self.previous
            .as_ref()
            .filter(|k| k.name == name && k.created.elapsed() < lifetime * 2)
            .map(|k| (k, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_keys_rotate_and_retire() {
        let lifetime = Duration::from_millis(50);
        let mut keys = TicketKeys::new().expect("keys");
        let first = keys.for_encryption(lifetime).name;
        assert!(matches!(
            keys.for_decryption(&first, lifetime),
            Some((_, false))
        ));
        keys.current.created -= lifetime;
        let second = keys.for_encryption(lifetime).name;
        assert_ne!(first, second);
        // The retired key still decrypts, asking for a fresh ticket.
        assert!(matches!(
            keys.for_decryption(&first, lifetime),
            Some((_, true))
        ));
        if let Some(prev) = keys.previous.as_mut() {
            prev.created -= lifetime * 2;
        }
        assert!(keys.for_decryption(&first, lifetime).is_none());
        assert!(keys.for_decryption(&[0; 16], lifetime).is_none());
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn key(fill: u8) -> Vec<u8> {
        (0..80u8).map(|i| i.wrapping_add(fill)).collect()
    }

    #[test]
    fn a_raw_80_byte_file_is_one_nginx_key() {
        let raw = key(0);
        let keys = FileTicketKeys::parse(&raw).expect("nginx key");
        assert_eq!(keys.len(), 1);
        let k = keys.for_encryption().expect("a key");
        assert_eq!(k.name[..], raw[..16]);
        assert_eq!(k.hmac[..], raw[16..48]);
        assert_eq!(k.aes[..], raw[48..80]);
    }

    #[test]
    fn base64_lines_are_haproxy_keys_and_the_first_encrypts() {
        let (a, b) = (key(1), key(100));
        let text = format!("# rotated by cron\n{}\n\n  {}  \n", b64(&a), b64(&b));
        let keys = FileTicketKeys::parse(text.as_bytes()).expect("haproxy keys");
        assert_eq!(keys.len(), 2);
        let first = keys.for_encryption().expect("a key");
        assert_eq!(first.name[..], a[..16]);
        assert_eq!(first.aes[..], a[16..48]);
        assert_eq!(first.hmac[..], a[48..80]);
        assert!(matches!(keys.for_decryption(&a[..16]), Some((_, false))));
        // Only the first key encrypts: a ticket of another key is renewed under the first.
        assert!(matches!(keys.for_decryption(&b[..16]), Some((_, true))));
        assert!(keys.for_decryption(&[9; 16]).is_none());
    }

    #[test]
    fn every_other_file_is_refused_with_the_fix() {
        let dup = format!("{}\n{}\n", b64(&key(1)), b64(&key(1)));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![7; 48], "48-byte (AES-128)"),
            // 80 bytes, but text: a comment and a 48-byte key line, not one raw key.
            (
                format!("# rotated 2026\n{}\n", b64(&[3; 48])).into_bytes(),
                "line 2 is a 48-byte",
            ),
            (vec![0xff; 79], "neither one raw 80-byte key nor base64"),
            (Vec::new(), "no key in the file"),
            (b"# only a comment\n".to_vec(), "no key in the file"),
            (
                format!("{}\n", b64(&[1; 48])).into_bytes(),
                "line 1 is a 48-byte",
            ),
            (
                format!("{}\n{}\n", b64(&key(1)), b64(&[1; 32])).into_bytes(),
                "line 2 decodes to 32 bytes",
            ),
            (b"not base64 at all!\n".to_vec(), "line 1 is not base64"),
            (dup.into_bytes(), "same name"),
        ];
        assert_eq!(
            cases[1].0.len(),
            80,
            "the text case is as long as a raw key"
        );
        for (bytes, want) in cases {
            let err = FileTicketKeys::parse(&bytes).expect_err(want).to_string();
            assert!(err.contains(want), "{want}: {err}");
            assert!(err.contains("openssl rand 80"), "the fix: {err}");
        }
    }
}
