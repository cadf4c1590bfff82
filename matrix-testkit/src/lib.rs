//! matrix-testkit (in progress).
