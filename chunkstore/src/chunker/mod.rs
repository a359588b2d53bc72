//! Rabin chunker (being written).
