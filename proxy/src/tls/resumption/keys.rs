//! The ticket key ring: random keys held only in memory, rotated every session lifetime, the
//! previous one still decrypting (and asking for a fresh ticket) for one more lifetime.

use std::time::{Duration, Instant};

/// The current ticket key and the one before it.
pub(super) struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
}

pub(super) struct TicketKey {
    pub(super) name: [u8; 16],
    pub(super) aes: [u8; 32],
    pub(super) hmac: [u8; 32],
    created: Instant,
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
}
