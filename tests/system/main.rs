//! Whole-system tests of the real binaries. Modules are added as the services land.

#[test]
fn workspace_root_holds_the_manifest() {
    assert!(
        smrtshare_tests::workspace_root()
            .join("Cargo.toml")
            .is_file()
    );
}
