//! The errors clients see.

/// What a client call can fail with: the driver's `errno`, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device was unplugged: hardware paths and new opens are refused (`ENODEV`).
    #[error("device unplugged (ENODEV)")]
    Unplugged,
    /// Work queued before the unplug that had not started: it never reached the hardware.
    #[error("device unplugged (ENODEV): queued work canceled before it ran")]
    Canceled,
    /// The driver reached state that had been released at unbind; the library refused the
    /// access (in C: a use-after-free). Only under `Lifetime::DevmEverywhere`.
    #[error("use after free caught: {what} was released at unbind")]
    UseAfterFree {
        /// What was accessed.
        what: String,
    },
    /// No buffer object with this handle in the file (`ENOENT`).
    #[error("no buffer object with handle {0} (ENOENT)")]
    NoBuffer(u32),
    /// The buffer object is not mapped by this client.
    #[error("buffer object {0} is not mapped")]
    NotMapped(u32),
    /// Every DMA chunk is in use (`EBUSY`).
    #[error("DMA pool exhausted (EBUSY)")]
    Busy,
    /// An operating-system call failed.
    #[error("{0}")]
    Os(String),
    /// Another error of the library.
    #[error(transparent)]
    Drmm(drmm::Error),
}

impl From<drmm::Error> for Error {
    fn from(e: drmm::Error) -> Self {
        match e {
            drmm::Error::Unplugged => Error::Unplugged,
            e => Error::Drmm(e),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Os(e.to_string())
    }
}
