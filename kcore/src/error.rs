//! KCore's error type: every failure a caller can cause is one of these, never a panic.

use crate::abi;

/// What went wrong with a request. Each maps to one negative hypercall status (see [`abi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The call or feature does not exist.
    NotSupported,
    /// An argument is out of range, unaligned or malformed.
    InvalidParameter,
    /// The caller does not own the page, table or object it named.
    Denied,
    /// A KCore pool (page-table pages, slots) is exhausted; the caller may top it up and retry.
    NoMemory,
    /// The object is in a state that does not allow the request.
    BadState,
    /// Something is already mapped or registered there.
    Exists,
    /// Nothing is mapped or registered there.
    NotFound,
    /// A boot image's signature does not verify.
    BadSignature,
}

impl Error {
    /// The SMCCC-style status code returned to the caller in x0.
    pub const fn code(self) -> i64 {
        match self {
            Error::NotSupported => abi::NOT_SUPPORTED,
            Error::InvalidParameter => abi::INVALID_PARAMETER,
            Error::Denied => abi::DENIED,
            Error::NoMemory => abi::NO_MEMORY,
            Error::BadState => abi::BAD_STATE,
            Error::Exists => abi::EXISTS,
            Error::NotFound => abi::NOT_FOUND,
            Error::BadSignature => abi::BAD_SIGNATURE,
        }
    }
}

/// Result alias for KCore operations.
pub type Result<T> = core::result::Result<T, Error>;
