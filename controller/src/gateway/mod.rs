//! The model gateway (`crucible gateway`): the only holder of provider keys. Sandboxes call it
//! with their run's capability token; it checks the token and the model, reserves the call
//! against the run's budget, forwards it with the provider's key, streams the answer back,
//! settles the budget with the provider's reported usage and appends the call to the run's
//! ledger.
//!
//! Pure parts: `token` (capability tokens), `budget` (accounting), `usage` (reading reported
//! usage from responses), `ledger` (the hash chain; its file sink is the one I/O there).

pub mod budget;
pub mod ledger;
pub mod token;
pub mod usage;
