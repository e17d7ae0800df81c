//! The HTTP door (placeholder; see the files).

pub mod request;
