//! Pure policy: plain data in, plain data out, no I/O and no protocol
//! types, each rule tested by tables.

pub mod digest;
pub mod hints;
pub mod link;
pub mod push;
