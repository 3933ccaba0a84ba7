//! One live connection as the layers above it see it: a bounded outbound queue ([`outbox`]),
//! close requests, the client's activity ([`state`]) and the stream order the writer keeps
//! ([`order`]). No sockets here: the `ws` layer drives these.

pub mod order;
pub mod outbox;
pub mod state;

pub use order::StreamOrder;
pub use outbox::{CloseReq, Out, Outbox, SLOW_CONSUMER};
pub use state::ConnState;
