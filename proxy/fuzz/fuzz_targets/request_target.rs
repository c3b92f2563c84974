//! Request targets: target bytes in, decided path and forwarded target out. The forwarded
//! target's path is always exactly the decided path, read back the same way by the URI type
//! the upstream request is built from, and deciding the forwarded target again changes nothing.
#![no_main]

use certgate::config::PathParams;
use certgate::policy::parse_target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the Host header the target is checked against, if any.
    let (host, raw): (Option<&[u8]>, &[u8]) = match data.split_first() {
        Some((0, rest)) => (None, rest),
        Some((1, rest)) => (Some(&b"localhost:8443"[..]), rest),
        Some((_, rest)) => (Some(&b"x"[..]), rest),
        None => (None, data),
    };
    for params in [PathParams::Reject, PathParams::Keep] {
        let Ok(target) = parse_target(raw, host, params) else {
            continue;
        };
        let forward = target.forward().as_str();
        let (path, query) = match forward.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (forward, None),
        };
        assert_eq!(path, target.path(), "{raw:?}");
        assert_eq!(query, target.query(), "{raw:?}");
        let uri: http::Uri = forward.parse().expect("forwarded target is a URI");
        assert_eq!(uri.path(), target.path(), "{raw:?}");
        assert_eq!(uri.to_string(), forward, "{raw:?}");
        if params == PathParams::Reject {
            assert!(!target.path().contains(';'), "{raw:?}");
        }
        let again = parse_target(forward.as_bytes(), None, params).expect("forwarded target re-parses");
        assert_eq!(again, target, "{raw:?}");
    }
});
