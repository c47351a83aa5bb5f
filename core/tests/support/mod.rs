//! What every property test file of the core shares.

use proptest::prelude::ProptestConfig;

/// 10,000 cases per property in every CI run (`PROPTEST_CASES` overrides it: the mutation runs
/// use 1,000), and no failure files written into the source tree: a failure prints its
/// minimal input instead.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
