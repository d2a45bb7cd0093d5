//! Revocable values and the grace-period primitive (work in progress).
