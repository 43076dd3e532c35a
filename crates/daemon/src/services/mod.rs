//! What oxvirtd does, one service per resource, on top of the store and the engines.

pub mod error;
