//! [`MatrixHandler`] and [`SharedHandler`].

use crate::error::HandlerError;
use crate::functions::HandlerFunctions;
use matrix_core::{AtomicMatrix, SegmentError};
use std::sync::Arc;

/// The primary handle on a segment: owns this process's mapping and
/// participant slot.
///
/// It is not `Clone`; [`share`](Self::share) gives [`SharedHandler`]s for
/// other threads. The mapping is reference-counted, so a shared handle keeps
/// it alive even after the `MatrixHandler` is dropped: no safe code can use
/// an unmapped segment.
pub struct MatrixHandler {
    matrix: Arc<AtomicMatrix>,
}

/// A handle for other threads, made by [`MatrixHandler::share`]. Cheap to
/// clone, `Send + Sync`, and it keeps the mapping alive.
#[derive(Clone)]
pub struct SharedHandler {
    matrix: Arc<AtomicMatrix>,
}

impl MatrixHandler {
    /// Creates and formats a new segment `/dev/shm/<name>` of `size` bytes
    /// (exclusive: an existing name is an error; mode 0600).
    pub fn create(name: &str, size: u32) -> Result<MatrixHandler, HandlerError> {
        Ok(Self::from_matrix(AtomicMatrix::create(name, size as u64)?))
    }

    /// Opens and validates an existing segment.
    pub fn open(name: &str) -> Result<MatrixHandler, HandlerError> {
        Ok(Self::from_matrix(AtomicMatrix::open(name)?))
    }

    /// Creates the segment, or opens it if it already exists; `None` makes
    /// an anonymous arena private to this process.
    pub fn bootstrap(name: Option<&str>, size: u32) -> Result<MatrixHandler, HandlerError> {
        let size = size as u64;
        let matrix = match name {
            None => AtomicMatrix::anonymous(size)?,
            Some(name) => match AtomicMatrix::create(name, size) {
                Err(SegmentError::AlreadyExists { .. }) => AtomicMatrix::open(name)?,
                other => other?,
            },
        };
        Ok(Self::from_matrix(matrix))
    }

    /// Wraps an attachment made with `matrix_core` directly.
    pub fn from_matrix(matrix: AtomicMatrix) -> MatrixHandler {
        MatrixHandler {
            matrix: Arc::new(matrix),
        }
    }

    /// A handle for other threads, sharing this process's mapping and slot.
    pub fn share(&self) -> SharedHandler {
        SharedHandler {
            matrix: Arc::clone(&self.matrix),
        }
    }
}

impl HandlerFunctions for MatrixHandler {
    #[inline]
    fn matrix(&self) -> &AtomicMatrix {
        &self.matrix
    }
}

impl HandlerFunctions for SharedHandler {
    #[inline]
    fn matrix(&self) -> &AtomicMatrix {
        &self.matrix
    }
}

impl std::fmt::Debug for MatrixHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixHandler")
            .field("name", &self.matrix.name())
            .field("segment_size", &self.matrix.segment_size())
            .finish()
    }
}

impl std::fmt::Debug for SharedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHandler")
            .field("name", &self.matrix.name())
            .finish()
    }
}

/// Removes the segment `/dev/shm/<name>`. Processes that have it mapped keep
/// using it until they drop their handles.
pub fn unlink(name: &str) -> Result<(), HandlerError> {
    Ok(matrix_core::unlink(name)?)
}
