//! The CPU cost of processing one event, as the original demo's busy reader:
//! `iterations` rounds of a cheap hash over the payload.

/// Burns CPU in proportion to `iterations`; the result depends on every
/// round so the compiler cannot skip them.
pub fn process(payload: &[u8], iterations: u32) -> u64 {
    let mut state = 0xcbf2_9ce4_8422_2325_u64;
    for round in 0..iterations {
        for &byte in payload.iter().take(64) {
            state ^= u64::from(byte) ^ u64::from(round);
            state = state.wrapping_mul(0x0100_0000_01b3);
        }
    }
    std::hint::black_box(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_dependent_on_iterations_and_payload() {
        assert_eq!(process(b"abc", 10), process(b"abc", 10));
        assert_ne!(process(b"abc", 10), process(b"abc", 11));
        assert_ne!(process(b"abc", 10), process(b"abd", 10));
        assert_eq!(process(b"abc", 0), 0xcbf2_9ce4_8422_2325);
    }
}
