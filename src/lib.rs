#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! tickcast (work in progress)

#[cfg(not(unix))]
compile_error!("tickcast needs a Unix-like system (it sends with MSG_DONTWAIT)");

pub mod client;
pub mod protocol;
pub mod server;
