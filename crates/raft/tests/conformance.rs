//! openraft's storage conformance suite against the RocksDB-backed log store and state machine
//! (a shard group and the metadata group, each on a fresh store).

use std::sync::{Arc, Mutex};

use openraft::testing::{StoreBuilder, Suite};
use runnel_raft::log_store::LogStore;
use runnel_raft::state_machine::{MetaApplier, SmKind, StateMachine};
use runnel_raft::{StorageError, TypeConfig};
use runnel_storage::{Store, StoreOptions};

struct Builder {
    meta: bool,
}

/// A trivial metadata applier: a list of applied commands.
#[derive(Default)]
struct ListApplier(Mutex<Vec<Vec<u8>>>);

impl MetaApplier for ListApplier {
    fn apply(&self, _index: u64, command: &[u8]) -> Vec<u8> {
        if let Ok(mut l) = self.0.lock() {
            l.push(command.to_vec());
        }
        Vec::new()
    }
    fn save(&self) -> Vec<u8> {
        runnel_raft::codec::encode(&*self.0.lock().unwrap()).unwrap()
    }
    fn restore(&self, data: &[u8]) -> Result<(), String> {
        let v: Vec<Vec<u8>> = runnel_raft::codec::decode(data).map_err(|e| e.to_string())?;
        *self.0.lock().unwrap() = v;
        Ok(())
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let group = if self.meta { 0 } else { 7 };
        let kind = if self.meta {
            SmKind::Meta(Arc::new(ListApplier::default()))
        } else {
            SmKind::Shard
        };
        let (sm, _frontier) = StateMachine::open(group, kind, store.clone()).unwrap();
        Ok((dir, LogStore::new(group, store), sm))
    }
}

#[test]
fn shard_group_storage_passes_openraft_suite() {
    Suite::test_all(Builder { meta: false }).expect("openraft storage suite (shard group)");
}

#[test]
fn meta_group_storage_passes_openraft_suite() {
    Suite::test_all(Builder { meta: true }).expect("openraft storage suite (metadata group)");
}
