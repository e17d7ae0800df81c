//! The HTTP door (placeholder; see the files).

pub mod access;
pub mod request;
pub mod response;
pub mod route;
pub mod sse;
