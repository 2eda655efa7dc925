//! Event encoding: a sequence number and a creation time (so readers can
//! measure end-to-end latency), padded to the configured size, and routing
//! keys spread so that every segment gets a share of the load.

use std::time::Duration;

pub const HEADER_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub sequence: u64,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("event of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
pub struct TooShort(pub usize);

impl Event {
    pub fn now(sequence: u64) -> Self {
        Event { sequence, created_ms: epoch_millis::now() }
    }

    /// Big-endian sequence and time, then zero padding up to `size` bytes.
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(size.max(HEADER_LEN));
        bytes.extend_from_slice(&self.sequence.to_be_bytes());
        bytes.extend_from_slice(&self.created_ms.to_be_bytes());
        bytes.resize(size.max(HEADER_LEN), 0);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, TooShort> {
        let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(TooShort(bytes.len()))?;
        let (sequence, created) = header.split_at(8);
        Ok(Event {
            sequence: u64::from_be_bytes(sequence.try_into().unwrap_or_default()),
            created_ms: u64::from_be_bytes(created.try_into().unwrap_or_default()),
        })
    }

    /// Time since creation, as seen now.
    pub fn age(&self) -> Duration {
        Duration::from_millis(epoch_millis::now().saturating_sub(self.created_ms))
    }
}

/// The routing key of the `sequence`-th event: `keys` distinct keys in turn,
/// so Pravega's key hashing spreads events evenly over the segments.
pub fn routing_key(sequence: u64, keys: u32) -> String {
    format!("key-{}", sequence % u64::from(keys.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let event = Event { sequence: 42, created_ms: 1_700_000_000_123 };
        let bytes = event.encode(100);
        assert_eq!(bytes.len(), 100);
        assert_eq!(Event::decode(&bytes), Ok(event));
        assert_eq!(event.encode(3).len(), HEADER_LEN, "never shorter than the header");
        assert_eq!(Event::decode(&bytes[..10]), Err(TooShort(10)));
    }

    #[test]
    fn routing_keys_cycle_through_all_keys() {
        let keys: std::collections::HashSet<String> = (0..1000).map(|s| routing_key(s, 10)).collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(routing_key(7, 0), "key-0");
    }
}
