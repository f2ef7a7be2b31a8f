//! The crate's one error type.

use crate::types::{NodeId, SeqNo, View};

/// Why a message, record or input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes ended before the value did.
    #[error("truncated input: needed {needed} more bytes")]
    Truncated {
        /// Bytes still needed.
        needed: usize,
    },
    /// The format version is not one this build reads.
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// A tag byte names no known variant.
    #[error("unknown {what} tag {tag}")]
    Tag {
        /// Which enum was being decoded.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// A length field exceeds its limit.
    #[error("{what} length {len} exceeds limit {max}")]
    Length {
        /// Which field.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Bytes were left over after a complete value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// Messages nest deeper than the format allows.
    #[error("nesting deeper than {0}")]
    Depth(usize),
    /// The sender is not a member of the configuration.
    #[error("{0:?} is not a member")]
    NotMember(NodeId),
    /// A signature did not verify.
    #[error("bad signature from {0:?}")]
    Signature(NodeId),
    /// A sequence number lies outside the watermark window.
    #[error("{seq:?} outside the window above {low:?}")]
    Window {
        /// The sequence number.
        seq: SeqNo,
        /// The low watermark.
        low: SeqNo,
    },
    /// A message is for a view the node is not in.
    #[error("message for {got:?} while in {current:?}")]
    View {
        /// The message's view.
        got: View,
        /// The node's view.
        current: View,
    },
    /// A proof (prepared certificate, checkpoint proof, new-view) does not hold.
    #[error("invalid proof: {0}")]
    Proof(&'static str),
    /// A configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}
