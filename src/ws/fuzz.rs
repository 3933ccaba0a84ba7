//! Property tests of the frame reader: arbitrary bytes from a client (masked or not, fragmented,
//! control frames, truncated) end in a message, a typed close or end of stream — never a panic,
//! never a message past the size limit. Failing inputs are kept in `proptest-regressions/`.

use proptest::prelude::*;

use super::reader::{FrameReader, Message, Prefixed, ReadEnd};
use crate::conn::ConnState;

const MAX: usize = 256;

/// A client frame: FIN/RSV bits, opcode, mask flag, a length field that may lie, payload.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..300), any::<[u8; 4]>(), 0u8..4).prop_map(
        |(head, masked, payload, key, len_form)| {
            let mut out = vec![head];
            let mask_bit = if masked { 0x80 } else { 0 };
            let len = payload.len();
            match len_form {
                0 if len < 126 => out.push(mask_bit | len as u8),
                1 => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                2 => {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&(len as u64).to_be_bytes());
                }
                _ => out.push(mask_bit | (len.min(125) as u8)),
            }
            if masked {
                out.extend_from_slice(&key);
            }
            out.extend(payload.iter().enumerate().map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }));
            out
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn the_reader_never_panics_and_never_exceeds_the_limit(
        frames in prop::collection::vec(frame(), 1..8),
        split in 0usize..64,
    ) {
        let bytes: Vec<u8> = frames.concat();
        let split = split.min(bytes.len());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let Ok(rt) = rt else { return Err(TestCaseError::fail("no runtime")) };
        rt.block_on(async {
            // Part of the bytes arrive as hyper's left-over prefix, the rest from the socket.
            let prefix = bytes::Bytes::copy_from_slice(&bytes[..split]);
            let mut reader = FrameReader::new(Prefixed::new(prefix, &bytes[split..]), MAX);
            let shared = ConnState::new(64);
            for _ in 0..32 {
                match reader.next(&shared).await {
                    Ok(Message::Text(t)) => {
                        prop_assert!(t.len() <= MAX);
                        prop_assert!(std::str::from_utf8(&t).is_ok());
                    }
                    Ok(Message::Binary(b)) => prop_assert!(b.len() <= MAX),
                    Err(ReadEnd::Gone) => return Ok(()),
                    Err(ReadEnd::PeerClosed(c) | ReadEnd::Violation(c)) => {
                        prop_assert!([1000, 1001, 1002, 1003, 1007, 1009].contains(&c.code) || (3000..5000).contains(&c.code));
                        return Ok(());
                    }
                }
            }
            Ok(())
        })?;
    }
}
