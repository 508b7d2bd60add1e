//! Statements the worker runs at every pass, parsed and analysed once per process (SPI kept
//! plans) instead of at each pass. They are still planned at each execution with their
//! arguments (the worker sets `plan_cache_mode = force_custom_plan`): a generic plan of the
//! outbox read, made without knowing where the round starts, was measured scanning the whole
//! outbox at every chunk. PostgreSQL's plan cache analyses a kept statement again by itself when
//! a relation it uses changes, and finds a dropped and re-created table again by name.

use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// Per process, by statement text (the texts are the program's own constants). Never
    /// freed: a handful of plans kept for the life of the worker, and no plan is freed from a
    /// thread-local destructor while the process exits.
    static KEPT: RefCell<HashMap<&'static str, &'static OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Whether a statement reads only, or changes what it reads (run without its own snapshot
/// then, as an update must be).
#[derive(Clone, Copy, PartialEq)]
pub enum Access {
    Read,
    Write,
}

/// `sql` prepared for arguments of the types of `args` (each call of a statement passes the
/// same types: SPI checks only their number): prepared on first use, then kept.
pub fn statement(
    client: &SpiClient<'_>,
    sql: &'static str,
    args: &[DatumWithOid],
    access: Access,
) -> SpiResult<&'static OwnedPreparedStatement> {
    if let Some(kept) = KEPT.with(|k| k.borrow().get(sql).copied()) {
        return Ok(kept);
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from_untagged(a.oid())).collect();
    let prepared = match access {
        Access::Read => client.prepare(sql, &types)?,
        Access::Write => client.prepare_mut(sql, &types)?,
    };
    let kept: &'static OwnedPreparedStatement = Box::leak(Box::new(prepared.keep()));
    KEPT.with(|k| k.borrow_mut().insert(sql, kept));
    Ok(kept)
}
