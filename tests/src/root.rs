//! The integration tests need root (XDP, network namespaces, bpffs). Without it they fail
//! loudly: a test that passes by skipping would hide that nothing was checked.

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the tests run under `cargo xtask test`, which sets `TRACKING_TEST_ROOT=1` after
/// checking for root; tests may assert it when they must not run any other way.
pub fn under_suite() -> bool {
    std::env::var_os("TRACKING_TEST_ROOT").is_some_and(|value| value == "1")
}

/// Call first in every test that needs root: panics with what to do instead when not root.
#[track_caller]
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (XDP, network namespaces, bpffs): run the suite with \
         `cargo xtask test` as root; tests are never skipped"
    );
}
