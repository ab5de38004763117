//! The Azure simulator (design.md §7).
