//! The compiled route matcher: a segment trie whose nodes carry, per method, a bitset of the
//! permissions whose routes end there. Matching a request walks every branch that fits (the
//! literal child and the wildcard child; a `**` node matches whatever is left) and ORs the
//! bitsets, so the cost depends on the path and the trie's shape, not on how many permissions
//! there are (beyond the bitset width, one bit per permission).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::route::{Methods, Route, Segment};

/// Words in the stack buffers used on the hot path: up to 16 × 64 = 1,024 permissions decide
/// without allocating.
pub(crate) const INLINE_WORDS: usize = 16;

/// A small, fast, non-cryptographic hasher (the rustc "Fx" hash). The maps it serves are built
/// from the policy (trusted); requests only look keys up, so they cannot degrade the tables.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Spread the entropy into the top bits too (hashbrown uses them for its control bytes).
        self.hash.rotate_left(26)
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Number of u64 words for `n` bits.
pub(crate) fn words_for(n: usize) -> usize {
    n.div_ceil(64)
}

/// Sets bit `i` (no-op if out of range).
pub(crate) fn set_bit(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1u64 << (i % 64);
    }
}

/// Whether bit `i` is set.
pub(crate) fn has_bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64)
        .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

#[inline]
pub(crate) fn or_into(acc: &mut [u64], bits: &[u64]) {
    for (a, b) in acc.iter_mut().zip(bits) {
        *a |= *b;
    }
}

/// Index of the lowest bit set in both.
#[inline]
pub(crate) fn first_common(a: &[u64], b: &[u64]) -> Option<usize> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let both = x & y;
        if both != 0 {
            return Some(i * 64 + both.trailing_zeros() as usize);
        }
    }
    None
}

pub(crate) fn is_empty(bits: &[u64]) -> bool {
    bits.iter().all(|w| *w == 0)
}

/// Indices of the set bits, ascending.
pub(crate) fn ones(bits: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bits.iter().enumerate().flat_map(|(i, &w)| {
        let mut w = w;
        std::iter::from_fn(move || {
            if w == 0 {
                return None;
            }
            let bit = w.trailing_zeros() as usize;
            w &= w - 1;
            Some(i * 64 + bit)
        })
    })
}

/// Per-method permission sets at one trie position.
#[derive(Default, Debug)]
struct MethodTable {
    /// Routes written with `*` as the method.
    any: Option<Box<[u64]>>,
    /// Routes naming methods; few entries, so a linear scan beats hashing.
    by_method: Vec<(Box<str>, Box<[u64]>)>,
}

impl MethodTable {
    fn add(&mut self, methods: &Methods, perm: usize, words: usize) {
        match methods {
            Methods::Any => {
                let bits = self
                    .any
                    .get_or_insert_with(|| vec![0; words].into_boxed_slice());
                set_bit(bits, perm);
            }
            Methods::List(list) => {
                for m in list {
                    let pos = self.by_method.iter().position(|(name, _)| **name == **m);
                    let idx = match pos {
                        Some(idx) => idx,
                        None => {
                            self.by_method.push((
                                m.clone().into_boxed_str(),
                                vec![0; words].into_boxed_slice(),
                            ));
                            self.by_method.len() - 1
                        }
                    };
                    if let Some((_, bits)) = self.by_method.get_mut(idx) {
                        set_bit(bits, perm);
                    }
                }
            }
        }
    }

    #[inline]
    fn or_into(&self, method: &str, acc: &mut [u64]) {
        if let Some(any) = &self.any {
            or_into(acc, any);
        }
        for (name, bits) in &self.by_method {
            if **name == *method {
                or_into(acc, bits);
                break;
            }
        }
    }
}

#[derive(Default, Debug)]
struct Node {
    literals: FxMap<Box<str>, u32>,
    wildcard: Option<u32>,
    /// Routes that end exactly here.
    exact: Option<MethodTable>,
    /// Routes that end here with `**`: they match here and everywhere below.
    rest: Option<MethodTable>,
}

/// The compiled matcher over all routes of a policy.
#[derive(Debug)]
pub(crate) struct Trie {
    nodes: Vec<Node>,
    words: usize,
}

impl Trie {
    /// An empty trie for `permissions` permissions.
    pub(crate) fn new(permissions: usize) -> Trie {
        Trie {
            nodes: vec![Node::default()],
            words: words_for(permissions),
        }
    }

    /// Bitset width in words.
    pub(crate) fn words(&self) -> usize {
        self.words
    }

    fn child(&mut self, node: usize, seg: &Segment) -> usize {
        let next = self.nodes.len();
        let existing = match (self.nodes.get(node), seg) {
            (Some(n), Segment::Literal(lit)) => n.literals.get(lit.as_str()).copied(),
            (Some(n), _) => n.wildcard,
            (None, _) => None,
        };
        if let Some(existing) = existing {
            return existing as usize;
        }
        // Trie size is bounded by the policy text, far below u32::MAX.
        let id = u32::try_from(next).unwrap_or(u32::MAX);
        self.nodes.push(Node::default());
        if let Some(n) = self.nodes.get_mut(node) {
            match seg {
                Segment::Literal(lit) => {
                    n.literals.insert(lit.clone().into_boxed_str(), id);
                }
                _ => n.wildcard = Some(id),
            }
        }
        next
    }

    /// Adds `route` as covering permission `perm`.
    pub(crate) fn insert(&mut self, route: &Route, perm: usize) {
        let words = self.words;
        let mut node = 0usize;
        for seg in route.segments() {
            if *seg == Segment::Rest {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.rest.get_or_insert_with(MethodTable::default).add(
                        route.methods(),
                        perm,
                        words,
                    );
                }
                return;
            }
            node = self.child(node, seg);
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.exact
                .get_or_insert_with(MethodTable::default)
                .add(route.methods(), perm, words);
        }
    }

    /// ORs into `acc` (at least `words()` long) the permissions with a route that matches.
    #[inline]
    pub(crate) fn covering_into(&self, method: &str, path: &str, acc: &mut [u64]) {
        self.walk(0, method, path, acc);
    }

    fn walk(&self, node: u32, method: &str, rest: &str, acc: &mut [u64]) {
        let Some(n) = self.nodes.get(node as usize) else {
            return;
        };
        if let Some(t) = &n.rest {
            t.or_into(method, acc);
        }
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            if let Some(t) = &n.exact {
                t.or_into(method, acc);
            }
            return;
        }
        let (seg, tail) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some(&child) = n.literals.get(seg) {
            self.walk(child, method, tail, acc);
        }
        if let Some(child) = n.wildcard {
            self.walk(child, method, tail, acc);
        }
    }

    /// Number of trie nodes.
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasher;

    fn route(s: &str) -> Route {
        match Route::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn trie(routes: &[(&str, usize)], perms: usize) -> Trie {
        let mut t = Trie::new(perms);
        for (r, p) in routes {
            t.insert(&route(r), *p);
        }
        t
    }

    fn cover(t: &Trie, m: &str, p: &str) -> Vec<usize> {
        let mut acc = vec![0u64; t.words()];
        t.covering_into(m, p, &mut acc);
        ones(&acc).collect()
    }

    #[test]
    fn bit_helpers() {
        let mut a = vec![0u64; 3];
        assert!(is_empty(&a));
        set_bit(&mut a, 0);
        set_bit(&mut a, 63);
        set_bit(&mut a, 64);
        set_bit(&mut a, 130);
        set_bit(&mut a, 1000); // ignored
        assert_eq!(ones(&a).collect::<Vec<_>>(), vec![0, 63, 64, 130]);
        assert!(has_bit(&a, 130) && !has_bit(&a, 129) && !has_bit(&a, 5000));
        let mut b = vec![0u64; 3];
        set_bit(&mut b, 130);
        set_bit(&mut b, 64);
        assert_eq!(first_common(&a, &b), Some(64));
        or_into(&mut b, &a);
        assert_eq!(ones(&b).count(), 4);
        assert_eq!(first_common(&[0, 0], &[1, 1]), None);
        assert_eq!(words_for(0), 0);
        assert_eq!(words_for(64), 1);
        assert_eq!(words_for(65), 2);
    }

    #[test]
    fn fx_hasher_distinguishes() {
        let b = BuildHasherDefault::<FxHasher>::default();
        let h = |s: &str| b.hash_one(s);
        assert_ne!(h("vm"), h("node"));
        assert_ne!(h("a"), h("a\0"));
        assert_ne!(h("abcdefgh"), h("abcdefgh\0"));
        assert_eq!(h("registry"), h("registry"));
    }

    #[test]
    fn literal_wildcard_rest() {
        let t = trie(
            &[
                ("GET /api/v1/vm", 0),
                ("POST /api/v1/vm", 1),
                ("GET /api/v1/*", 2),
                ("* /api/**", 3),
                ("GET|HEAD /api/v1/status", 4),
                ("GET /", 5),
            ],
            6,
        );
        assert_eq!(cover(&t, "GET", "/api/v1/vm"), vec![0, 2, 3]);
        assert_eq!(cover(&t, "POST", "/api/v1/vm"), vec![1, 3]);
        assert_eq!(cover(&t, "HEAD", "/api/v1/status"), vec![3, 4]);
        assert_eq!(cover(&t, "GET", "/api/v1/status/"), vec![2, 3, 4]);
        assert_eq!(cover(&t, "DELETE", "/api"), vec![3]);
        assert_eq!(cover(&t, "GET", "/"), vec![5]);
        assert_eq!(cover(&t, "GET", "/other"), Vec::<usize>::new());
        assert_eq!(cover(&t, "get", "/api/v1/vm"), vec![3]); // only the "*" route
        assert_eq!(cover(&t, "get", "/api/v1/status"), vec![3]);
        assert_eq!(cover(&t, "GET", "/API/v1/vm"), Vec::<usize>::new());
    }

    #[test]
    fn overlapping_wildcards_walk_all_branches() {
        let t = trie(
            &[
                ("GET /a/*/c", 0),
                ("GET /*/b/c", 1),
                ("GET /*/*/*", 2),
                ("GET /a/b/**", 3),
                ("GET /*/**", 4),
                ("GET /**", 5),
            ],
            6,
        );
        assert_eq!(cover(&t, "GET", "/a/b/c"), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(cover(&t, "GET", "/x/b/c"), vec![1, 2, 4, 5]);
        assert_eq!(cover(&t, "GET", "/x"), vec![4, 5]);
        assert_eq!(cover(&t, "GET", "/"), vec![5]);
    }

    #[test]
    fn wide_bitsets() {
        let routes: Vec<String> = (0..300).map(|i| format!("GET /p/{i}")).collect();
        let mut t = Trie::new(301);
        for (i, r) in routes.iter().enumerate() {
            t.insert(&route(r), i);
        }
        t.insert(&route("GET /p/*"), 300);
        assert_eq!(t.words(), 5);
        assert_eq!(cover(&t, "GET", "/p/299"), vec![299, 300]);
        assert_eq!(cover(&t, "GET", "/p/x"), vec![300]);
        assert_eq!(t.node_count(), 303);
    }

    fn arb_route() -> impl Strategy<Value = String> {
        let seg = prop_oneof!["[ab]", Just("*".to_string()), Just("{x}".to_string())];
        (
            prop_oneof![
                Just("GET".to_string()),
                Just("POST".to_string()),
                Just("GET|POST".to_string()),
                Just("*".to_string())
            ],
            proptest::collection::vec(seg, 0..4),
            any::<bool>(),
        )
            .prop_map(|(m, segs, rest)| {
                let mut p = String::new();
                for s in segs {
                    p.push('/');
                    p.push_str(&s);
                }
                if rest {
                    p.push_str("/**");
                }
                if p.is_empty() {
                    p.push('/');
                }
                format!("{m} {p}")
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]
        /// The trie agrees with the straightforward matcher on every route.
        #[test]
        fn trie_matches_reference(
            routes in proptest::collection::vec(arb_route(), 1..12),
            method in prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
            path in proptest::collection::vec("[abc]", 0..5),
            trailing in any::<bool>(),
        ) {
            let parsed: Vec<Route> = routes.iter().map(|r| route(r)).collect();
            let mut t = Trie::new(parsed.len());
            for (i, r) in parsed.iter().enumerate() { t.insert(r, i); }
            let mut p = String::from("/");
            p.push_str(&path.join("/"));
            if trailing && !path.is_empty() { p.push('/'); }
            let want: Vec<usize> = parsed.iter().enumerate()
                .filter(|(_, r)| r.matches(method, &p)).map(|(i, _)| i).collect();
            prop_assert_eq!(cover(&t, method, &p), want);
        }
    }
}
