//! Pins which public types may cross threads.

use matrix_handler::SharedHandler;
use matrix_internals::tables::MapError;
use matrix_internals::*;

fn send_sync<T: Send + Sync>() {}
fn error<E: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<WorkQueue<[u8; 64], SharedHandler>>();
    send_sync::<ShmHashMap<u64, [u64; 4], SharedHandler>>();
    send_sync::<Registry<SharedHandler>>();
    send_sync::<WorkerPool>();
    send_sync::<QueueRecovery<u64>>();
    error::<QueueError>();
    error::<PushError<u64>>();
    error::<PopError>();
    error::<RegistryError>();
    error::<MapError>();
    error::<WalkError>();
}
