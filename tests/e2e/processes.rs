//! The real binary as separate OS processes.
