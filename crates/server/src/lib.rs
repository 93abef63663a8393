//! The parts of the `tributary` binary that other targets reach: the
//! configuration parser, for its fuzz target and corpus replay.

pub mod config;
