use std::process::ExitCode;

/// How a command that ran to the end came out. Errors (usage, I/O, undecodable input) are
/// `Err` and exit 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything checked out (exit 0).
    Ok,
    /// Something was checked and found invalid: a signature, a checksum (exit 1).
    Invalid,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok => Self::SUCCESS,
            Outcome::Invalid => Self::from(1),
        }
    }
}

/// Exit status for usage and I/O errors.
pub(crate) const EXIT_ERROR: u8 = 2;
