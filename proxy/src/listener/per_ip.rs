//! `limits.connections_per_ip`: the open connections of each client address, so one address
//! (a single misbehaving client, or a flood from one host) cannot take every connection of
//! `max_connections` from the others. The address is the PROXY header's source when the
//! listener uses PROXY protocol, else the socket's peer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Open connections per client address, for one listener.
pub(crate) struct PerIp {
    limit: usize,
    /// Only addresses with open connections: an entry goes when its last connection closes.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count, given back when dropped.
pub(crate) struct IpSlot<'a> {
    table: &'a PerIp,
    ip: IpAddr,
}

impl PerIp {
    pub(crate) fn new(limit: usize) -> PerIp {
        PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or None when it has `limit` open already.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<IpSlot<'_>> {
        // An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d; it is the same
        // client as a.b.c.d.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot { table: self, ip })
    }

    /// Connections open now from `ip`.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_limit_and_a_closed_connection_frees_its_place() {
        let t = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = t.admit(a);
        // The same client over IPv4 and as an IPv4-mapped IPv6 address.
        let a2 = t.admit("::ffff:192.0.2.1".parse().expect("ip"));
        assert!(a1.is_some() && a2.is_some());
        assert!(t.admit(a).is_none(), "a third from the same address");
        let b1 = t.admit(b);
        assert!(b1.is_some(), "another address is not affected");
        drop(a1);
        assert_eq!(t.open(a), 1);
        let a3 = t.admit(a);
        assert!(a3.is_some(), "a closed connection gives its place back");
        drop((a2, a3, b1));
        assert_eq!((t.open(a), t.open(b)), (0, 0));
        assert!(
            t.open.lock().expect("lock").is_empty(),
            "no entry left behind"
        );
    }
}
