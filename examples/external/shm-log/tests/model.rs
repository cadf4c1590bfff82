//! Model-based: random appends and reads of the log, interleaved with random
//! allocator operations of the testkit's strategies, on one segment that
//! the log shares with the root registry. After every step the runner
//! checks the allocator against its shadow model and every invariant; the
//! log is compared with a `Vec` of the messages appended.

use matrix_testkit::proptest::prelude::*;
use matrix_testkit::{strategy, ModelConfig, ModelRunner, Op};
use shm_log::ShmLog;

#[derive(Debug, Clone)]
enum Step {
    Allocator(Op),
    Append(u64, Vec<u8>),
    ReadAll,
    Recover,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => strategy::op().prop_map(Step::Allocator),
        2 => (0u64..4, prop::collection::vec(any::<u8>(), 0..=48))
            .prop_map(|(p, d)| Step::Append(p, d)),
        1 => Just(Step::ReadAll),
        1 => Just(Step::Recover),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_and_allocator_agree_with_their_models(steps in prop::collection::vec(step(), 1..120)) {
        let config = ModelConfig { segment_size: 512 << 10, label: "shmlog-model".into() };
        let mut runner = ModelRunner::with_setup(&config, |h| {
            ShmLog::open_or_create(h, "log").map(|_| ()).map_err(|e| e.to_string())
        })
        .map_err(|d| TestCaseError::fail(d.to_string()))?;
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
        for s in &steps {
            let result = match s {
                Step::Allocator(op) => runner.apply(op),
                Step::Append(producer, data) => runner.apply_user("append", |h| {
                    let log = ShmLog::open(h, "log").map_err(|e| e.to_string())?;
                    match log.append(*producer, data) {
                        Ok(seq) if seq == model.len() as u64 => {
                            model.push((*producer, data.clone()));
                            Ok(())
                        }
                        Ok(seq) => Err(format!("seq {seq}, model expects {}", model.len())),
                        // The allocator ops may fill the segment: then the
                        // append takes nothing, and the model agrees.
                        Err(shm_log::LogError::Handler(
                            matrix_handler::HandlerError::AllocationFailed(_),
                        )) => {
                            model.push((u64::MAX, Vec::new()));
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }),
                Step::ReadAll | Step::Recover => runner.apply_user("read", |h| {
                    let log = ShmLog::open(h, "log").map_err(|e| e.to_string())?;
                    if matches!(s, Step::Recover) {
                        let r = log.recover().map_err(|e| e.to_string())?;
                        if r.finished + r.freed != 0 {
                            return Err(format!("nothing to recover, yet {r:?}"));
                        }
                    }
                    let got: Vec<(u64, Vec<u8>)> = log
                        .read_all()
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(|m| (m.producer, m.data))
                        .collect();
                    let want: Vec<(u64, Vec<u8>)> =
                        model.iter().filter(|m| m.0 != u64::MAX).cloned().collect();
                    if got != want {
                        return Err(format!("log holds {got:?}, model {want:?}"));
                    }
                    Ok(())
                }),
            };
            result.map_err(|d| TestCaseError::fail(d.to_string()))?;
        }
        runner.drain().map_err(|d| TestCaseError::fail(d.to_string()))?;
    }
}
