//! The wire format: WebSocket frames (RFC 6455 framing this server writes itself), client events
//! decoded from JSON, and server events encoded once into frames. Knows nothing of sockets,
//! rooms or storage.

pub mod client;
pub mod frame;
pub mod server;

#[cfg(test)]
mod fuzz;

pub use client::{decode, ClientEvent, DecodeLimits, Rejected};
