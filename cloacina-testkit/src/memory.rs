//! The in-memory storage as a contract target.

use std::sync::Arc;

use async_trait::async_trait;
use cloacina_core::memory::MemoryStorage;
use cloacina_core::ports::Storage;

use crate::contract::ContractTarget;

/// A fresh in-memory tenant.
#[derive(Debug, Default)]
pub struct MemoryTarget {
    storage: Arc<MemoryStorage>,
}

/// Setup for [`storage_contract!`](crate::storage_contract).
pub async fn memory_target() -> MemoryTarget {
    MemoryTarget::default()
}

#[async_trait]
impl ContractTarget for MemoryTarget {
    fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }
    async fn reopen(&self) -> Arc<dyn Storage> {
        // Memory has nothing to reopen: the same store is the same tenant.
        self.storage.clone()
    }
    async fn migrations_applied_on_reopen(&self) -> Option<Vec<String>> {
        None
    }
    async fn other_tenant(&self) -> Arc<dyn Storage> {
        Arc::new(MemoryStorage::new())
    }
}
