//! Event identities as 128-bit keyed hashes.
//!
//! An event is identified by (tenant, source, event_id). The engine keeps,
//! for every event of an open month, what it added, and for events of closed
//! months their version for a while: three strings per event would be most
//! of the aggregator's memory. Each state has its own secret SipHash-1-3 key
//! (kept in its checkpoint), so a sender cannot craft two identities with the
//! same 128-bit id; two different identities share one by chance with
//! probability about n² / 2¹²⁹ (10⁻²³ for 10⁸ events).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use meter_model::EventHeader;
use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

/// An event's identity (tenant, source, event_id), hashed to 128 bits. Held
/// as two halves (alignment 8, not 16), so a map entry of an event of an
/// open month takes 88 bytes instead of 96; compared, hashed and saved as the
/// `u128` it is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventId([u64; 2]);

impl EventId {
    pub fn from_u128(v: u128) -> EventId {
        EventId([(v >> 64) as u64, v as u64])
    }

    pub fn as_u128(self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }
}

impl std::fmt::Debug for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventId({:032x})", self.as_u128())
    }
}

impl std::hash::Hash for EventId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.as_u128());
    }
}

impl PartialOrd for EventId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_u128().cmp(&other.as_u128())
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_u128().serialize(s)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u128::deserialize(d).map(EventId::from_u128)
    }
}

/// The secret key of one partition state's identities.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityKey([u8; 16]);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(secret)")
    }
}

impl IdentityKey {
    /// A fresh key from the operating system's random source.
    pub fn random() -> Self {
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness (it does not happen on Linux): the standard
            // library's randomly seeded hasher is the next best source.
            use std::hash::BuildHasher;
            let a = std::collections::hash_map::RandomState::new().hash_one(0u8);
            let b = std::collections::hash_map::RandomState::new().hash_one(1u8);
            key[..8].copy_from_slice(&a.to_le_bytes());
            key[8..].copy_from_slice(&b.to_le_bytes());
        }
        IdentityKey(key)
    }

    /// A 64-bit seed drawn from the key (the scope index's hasher): a
    /// keyed hash of a constant, so the seed does not reveal the key.
    pub fn seed(&self) -> u64 {
        let mut hasher = SipHasher13::new_with_key(&self.0);
        hasher.write(b"scope index seed");
        hasher.finish()
    }

    /// The identity of an event.
    pub fn of(&self, h: &EventHeader) -> EventId {
        self.of_parts(&h.tenant, &h.source, &h.event_id)
    }

    /// The identity of (tenant, source, event_id).
    pub fn of_parts(&self, tenant: &str, source: &str, event_id: &str) -> EventId {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ; one buffer
        // so the hasher takes one write.
        let mut bytes = [0u8; 256];
        let needed = 24 + tenant.len() + source.len() + event_id.len();
        let mut heap = Vec::new();
        let buffer: &mut [u8] = if needed <= bytes.len() {
            &mut bytes[..needed]
        } else {
            heap.resize(needed, 0);
            &mut heap
        };
        let mut at = 0;
        for part in [tenant, source, event_id] {
            buffer[at..at + 8].copy_from_slice(&(part.len() as u64).to_le_bytes());
            buffer[at + 8..at + 8 + part.len()].copy_from_slice(part.as_bytes());
            at += 8 + part.len();
        }
        let mut hasher = SipHasher13::new_with_key(&self.0);
        hasher.write(buffer);
        EventId::from_u128(hasher.finish128().as_u128())
    }
}

/// Maps keyed by [`EventId`]: the id is already a keyed hash, so its own
/// bits are the map's hash.
pub type IdMap<V> = HashMap<EventId, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used by `EventId`; anything else still hashes.
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn header(tenant: &str, source: &str, id: &str) -> EventHeader {
        EventHeader {
            event_id: id.into(),
            source: source.into(),
            tenant: tenant.into(),
            subsidiary: "s".into(),
            domain: "d".into(),
            event_time: DateTime::UNIX_EPOCH,
            ingest_time: DateTime::UNIX_EPOCH,
            version: 0,
            deleted: false,
        }
    }

    #[test]
    fn an_identity_is_saved_ordered_and_hashed_as_its_u128() {
        let values = [0u128, 1, u128::from(u64::MAX), u128::from(u64::MAX) + 1, u128::MAX - 7, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210];
        for v in values {
            let id = EventId::from_u128(v);
            assert_eq!(id.as_u128(), v);
            assert_eq!(postcard::to_allocvec(&id).unwrap(), postcard::to_allocvec(&v).unwrap(), "checkpoint bytes unchanged");
            assert_eq!(postcard::from_bytes::<EventId>(&postcard::to_allocvec(&v).unwrap()).unwrap(), id);
            let mut h = IdHasher::default();
            std::hash::Hash::hash(&id, &mut h);
            assert_eq!(h.finish(), (v as u64) ^ ((v >> 64) as u64));
        }
        let mut sorted = values.map(EventId::from_u128);
        sorted.sort();
        let mut expected = values;
        expected.sort();
        assert_eq!(sorted.map(EventId::as_u128), expected);
    }

    #[test]
    fn identity_parts_do_not_run_into_each_other_and_keys_differ() {
        let key = IdentityKey::random();
        assert_ne!(key.of(&header("ab", "c", "1")), key.of(&header("a", "bc", "1")));
        assert_ne!(key.of(&header("acme", "glpi", "1")), key.of(&header("globex", "glpi", "1")));
        assert_eq!(key.of(&header("acme", "glpi", "1")), key.of(&header("acme", "glpi", "1")));
        // Another state's key gives other ids (a sender cannot aim at one).
        assert_ne!(IdentityKey::random().of(&header("acme", "glpi", "1")), key.of(&header("acme", "glpi", "1")));
    }
}
