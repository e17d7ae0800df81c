#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! tickcast (work in progress)

pub mod protocol;
