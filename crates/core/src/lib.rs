//! Protocol-neutral broker core.
