//! Small values tests need: random names, the clock, free ports.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn random_hex(n_bytes: usize) -> String {
    (0..n_bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A loopback TCP port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
