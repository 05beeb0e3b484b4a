//! Lab topology (being written).
