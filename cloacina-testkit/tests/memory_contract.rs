//! The storage contract suite against the in-memory reference storage.

cloacina_testkit::storage_contract!(cloacina_testkit::memory::memory_target());
