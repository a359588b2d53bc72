//! Chunk store (being written).
