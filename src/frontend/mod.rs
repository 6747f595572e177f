//! The client-facing protocols. Each holds only protocol mechanics; the
//! request path both drive is [`crate::exchange`].

mod body;
pub mod h1;
pub mod h2;
mod io;

pub use body::{BodyTooLarge, CappedBody, Tripwire};
pub use io::WriteDeadline;
