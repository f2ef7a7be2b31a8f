//! The crate's one error type: why a request body cannot be let through as it is.

/// Why a request body was refused before any rule of the policy applied: it is not JSON-RPC
/// the node would run, or it names no method the node has. Each carries the JSON-RPC code the
/// node itself gives for the same fault ([`Error::code`]); `at` is the request's position in
/// its batch (0 for a single request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not JSON (-32700).
    #[error("not JSON: {0}")]
    NotJson(String),
    /// Arrays and objects nest deeper than [`crate::DEPTH_MAX`], counted on the bytes before
    /// parsing (-32600).
    #[error("arrays and objects nested deeper than {max}")]
    TooDeep {
        /// The bound.
        max: usize,
    },
    /// A batch of more than [`crate::BATCH_MAX`] requests (-32600).
    #[error("a batch holds at most {max} requests")]
    BatchTooLong {
        /// The bound.
        max: usize,
    },
    /// An empty batch, `[]` (-32600).
    #[error("empty batch")]
    EmptyBatch,
    /// A request that is not an object, or an object with a member twice (-32600).
    #[error("request {at}: not a request object")]
    NotAnObject {
        /// Its position.
        at: usize,
    },
    /// `jsonrpc` is not exactly `"2.0"` (-32600).
    #[error("request {at}: need \"jsonrpc\": \"2.0\"")]
    NotJsonRpc2 {
        /// Its position.
        at: usize,
    },
    /// An id that is not a string, a number or null, or longer than 256 bytes as JSON text
    /// (-32600).
    #[error("request {at}: the id must be a string, a number or null of at most 256 bytes")]
    BadId {
        /// Its position.
        at: usize,
    },
    /// No `method`, one that is not a string, or a name over 128 bytes (-32600).
    #[error("request {at}: missing method, or a name over 128 bytes")]
    NoMethod {
        /// Its position.
        at: usize,
    },
    /// `params` present but neither an array nor an object (-32600).
    #[error("request {at}: params must be an array or an object")]
    ParamsNotStructured {
        /// Its position.
        at: usize,
    },
    /// A method the node does not have (-32601).
    #[error("request {at}: no method {name:?}")]
    UnknownMethod {
        /// Its position.
        at: usize,
        /// The name asked for (at most 128 bytes).
        name: String,
    },
}

impl Error {
    /// The JSON-RPC error code the node gives for the same fault: -32700 for a body that is
    /// not JSON, -32601 for an unknown method, -32600 for the rest.
    pub fn code(&self) -> i64 {
        match self {
            Self::NotJson(_) => crate::code::PARSE,
            Self::UnknownMethod { .. } => crate::code::METHOD_NOT_FOUND,
            _ => crate::code::INVALID_REQUEST,
        }
    }
}
