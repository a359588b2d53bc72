//! openraft's storage conformance suite against the pair that ships: `RedbLogStore` and the
//! redb `StateMachine` (applied state, membership, snapshots).

use filesyncd_raft::log_store::{LogStoreOptions, RedbLogStore};
use filesyncd_raft::state_machine::StateMachine;
use filesyncd_raft::{NodeId, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};

struct Builder;

fn err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl StoreBuilder<TypeConfig, RedbLogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RedbLogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(err)?;
        // The suite appends with holes (openraft itself never does): contiguity check off.
        let options = LogStoreOptions {
            check_contiguous: false,
        };
        let store =
            RedbLogStore::open_with(dir.path().join("log.redb"), 1, options).map_err(err)?;
        let sm = StateMachine::open(&dir.path().join("sm")).map_err(err)?;
        Ok((dir, store, sm))
    }
}

#[test]
fn openraft_storage_suite_with_redb_state_machine() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite failed: {e}");
    }
}
