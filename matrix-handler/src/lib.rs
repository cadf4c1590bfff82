//! matrix-handler (in progress).
