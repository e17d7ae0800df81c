//! The client's error type.

use crate::protocol::{ErrorCode, NameError, Reason, TextError};
use std::fmt;
use std::io;

/// Why a client call failed. Never a panic, never a silent drop.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Could not connect.
    Connect(io::Error),
    /// The server turned the connection away (`BYE server-full`, …).
    Refused(Reason),
    /// The server refused the token.
    AuthFailed,
    /// The server answered `ERR CODE TEXT`.
    Server {
        /// The code.
        code: ErrorCode,
        /// The server's words.
        text: String,
    },
    /// No answer within [`ClientConfig::request_timeout`](super::ClientConfig::request_timeout).
    Timeout,
    /// No connection is up right now (the client is reconnecting); nothing
    /// was sent.
    NotConnected,
    /// The connection was lost before the answer came; the command may or
    /// may not have reached the server.
    Disconnected,
    /// The client is closed.
    Closed,
    /// The text cannot travel in a line.
    InvalidText(TextError),
    /// Not a valid name.
    InvalidName(NameError),
    /// Something the client does not do through this call.
    Unsupported(&'static str),
    /// A value could not be turned into JSON, or a payload out of it.
    #[cfg(feature = "serde")]
    Json(serde_json::Error),
}

impl ClientError {
    /// The server's error code, if the server refused the command.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Refused(reason) => {
                write!(f, "the server refused the connection ({reason})")
            }
            ClientError::AuthFailed => f.write_str("the server refused the token"),
            ClientError::Server { code, text } => write!(f, "{code}: {text}"),
            ClientError::Timeout => f.write_str("no answer from the server in time"),
            ClientError::NotConnected => f.write_str("not connected (reconnecting)"),
            ClientError::Disconnected => {
                f.write_str("the connection was lost before the answer came")
            }
            ClientError::Closed => f.write_str("the client is closed"),
            ClientError::InvalidText(e) => write!(f, "{e}"),
            ClientError::InvalidName(e) => write!(f, "{e}"),
            ClientError::Unsupported(what) => f.write_str(what),
            #[cfg(feature = "serde")]
            ClientError::Json(e) => write!(f, "JSON: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect(e) => Some(e),
            ClientError::InvalidText(e) => Some(e),
            ClientError::InvalidName(e) => Some(e),
            #[cfg(feature = "serde")]
            ClientError::Json(e) => Some(e),
            _ => None,
        }
    }
}
