//! Config tests (being written).
