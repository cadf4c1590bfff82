//! The allocator and handler against the shadow model, op by op.

use matrix_testkit::strategy::ops;
use matrix_testkit::{run_ops, ModelConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// At least 512 cases in CI; `PROPTEST_CASES` raises it.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .max(512)
}

#[test]
fn allocator_matches_the_shadow_model() {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let model = ModelConfig {
        label: "model-sm".into(),
        ..ModelConfig::default()
    };
    let totals = std::cell::RefCell::new(matrix_testkit::RunStats::default());
    runner
        .run(&ops(200..260), |sequence| {
            let stats =
                run_ops(&sequence, &model).map_err(|d| TestCaseError::fail(d.to_string()))?;
            let mut t = totals.borrow_mut();
            t.ops += stats.ops;
            t.allocations += stats.allocations;
            t.frees += stats.frees;
            t.out_of_memory += stats.out_of_memory;
            t.too_large += stats.too_large;
            t.refused += stats.refused;
            t.recovered_blocks += stats.recovered_blocks;
            Ok(())
        })
        .unwrap();
    let t = totals.into_inner();
    println!("model: {} cases, {t:?}", cases());
    // The distribution must actually reach the interesting outcomes.
    assert!(
        t.out_of_memory > 0 && t.too_large > 0 && t.refused > 0 && t.recovered_blocks > 0,
        "{t:?}"
    );
}
