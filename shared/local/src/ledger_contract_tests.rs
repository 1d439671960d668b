//! The ledger, result and webhook contracts (`domain::ledger_contract`, `domain::result_contract`,
//! `domain::webhook_contract`) over SQLite: each check on a fresh database file, as
//! `deepemotion serve` opens it.

use std::ops::Deref;

use crate::SqliteStore;

/// A store on a file in a temporary directory, removed after the store is closed.
struct OnDisk {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Deref for OnDisk {
    type Target = SqliteStore;

    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

async fn on_disk() -> OnDisk {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("deepemotion.db")).unwrap();
    OnDisk { store, _dir: dir }
}

domain::ledger_contract_tests!(on_disk);
domain::result_contract_tests!(on_disk);
domain::webhook_contract_tests!(on_disk);
