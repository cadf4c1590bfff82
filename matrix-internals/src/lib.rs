//! matrix-internals (in progress).
