//! The client-facing protocols. Each holds only protocol mechanics; the
//! request path both drive is [`crate::exchange`].

pub mod h1;
pub mod h2;
mod io;

pub use io::WriteDeadline;
