//! The durable lease store: what every acknowledged client holds, kept in an append-only,
//! human-readable log that survives kill -9 at any moment.

mod record;
mod store;
mod table;

pub use record::{Lease, LeaseState, RecordError, to_system_time, unix_now};
pub use store::{LeaseError, LeaseStore, read_leases};
pub use table::LeaseTable;

#[cfg(test)]
mod tests;
