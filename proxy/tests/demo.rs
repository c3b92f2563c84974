//! `certgate demo --once`: the README's first command, end to end.

#[test]
fn demo_tour_passes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certgate"))
        .args(["demo", "--once"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all 7 steps behaved as expected"), "{text}");
    assert!(
        text.contains("PASS laptop revoked at the CA's HTTP distribution point"),
        "{text}"
    );
    assert!(!text.contains("FAIL "), "{text}");
}
