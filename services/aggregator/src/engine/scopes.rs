//! Interned aggregate scopes.
//!
//! A scope is what the aggregates of one event share across periods and
//! windows: kind, tenant, subsidiary, domain, metric, unit and dimensions.
//! Stored once and referred to by a small id, it makes an aggregate's key
//! `(scope, period, window start)`: fixed size, hashed and compared without
//! touching a string.
//!
//! A scope is found by its exact content: the event's fields are written
//! into one reused buffer (no allocation), hashed in one call (foldhash,
//! seeded from the state's secret key, so a sender cannot aim scopes at one
//! bucket), and compared with each candidate's stored bytes. No probability
//! argument: two scopes share an id only when they are equal.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use meter_model::{DimensionValue, EncodedDimensions, EventKind};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::encoding;
use super::identity::IdentityKey;

pub type ScopeId = u32;

/// One scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeData {
    pub kind: EventKind,
    pub tenant: String,
    pub subsidiary: String,
    pub domain: String,
    pub metric: String,
    pub unit: String,
    pub dimensions: EncodedDimensions,
    /// Quantity = base / quantity_divisor; cost = round(cost_numerator / divisor).
    #[serde(with = "encoding::decimal")]
    pub quantity_divisor: Decimal,
    #[serde(with = "encoding::decimal")]
    pub divisor: Decimal,
}

/// A scope as an event describes it, borrowed.
#[derive(Clone, Copy)]
pub struct ScopeProbe<'a> {
    pub kind: EventKind,
    pub tenant: &'a str,
    pub subsidiary: &'a str,
    pub domain: &'a str,
    pub metric: &'a str,
    pub unit: &'a str,
    /// In strictly increasing key order.
    pub dimensions: &'a [(&'a str, DimensionValue<'a>)],
    pub quantity_divisor: Decimal,
    pub divisor: Decimal,
}

impl ScopeProbe<'_> {
    fn to_data(self) -> ScopeData {
        ScopeData {
            kind: self.kind,
            tenant: self.tenant.to_string(),
            subsidiary: self.subsidiary.to_string(),
            domain: self.domain.to_string(),
            metric: self.metric.to_string(),
            unit: self.unit.to_string(),
            dimensions: EncodedDimensions::from_pairs(self.dimensions),
            quantity_divisor: self.quantity_divisor,
            divisor: self.divisor,
        }
    }
}

/// The bytes that identify a scope, in `out`: kind, owner, metric and each
/// dimension value, length-prefixed. Keys, unit and divisors are not in
/// them: the rating code gives every (kind, metric) one set of them.
/// (Built once and hashed in one call: cheaper than hashing and comparing
/// piece by piece.)
fn content<'v>(out: &mut Vec<u8>, kind: EventKind, texts: [&str; 4], values: impl Iterator<Item = Value<'v>> + Clone) {
    out.clear();
    let lengths: usize = texts.iter().map(|t| t.len()).sum::<usize>() + values.clone().map(|v| v.len()).sum::<usize>();
    out.reserve(1 + 4 * (texts.len() + values.clone().count()) + lengths);
    out.push(kind as u8);
    for text in texts {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    for value in values {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        match value {
            Value::Bytes(b) => out.extend_from_slice(b),
            Value::Held(v) => v.write_to(out),
        }
    }
}

#[derive(Clone, Copy)]
enum Value<'v> {
    Bytes(&'v [u8]),
    Held(&'v DimensionValue<'v>),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len(),
            Value::Held(v) => v.len(),
        }
    }
}

fn probe_content(out: &mut Vec<u8>, p: &ScopeProbe<'_>) {
    content(out, p.kind, [p.tenant, p.subsidiary, p.domain, p.metric], p.dimensions.iter().map(|(_, v)| Value::Held(v)));
}

fn stored_content(s: &ScopeData) -> Box<[u8]> {
    let mut out = Vec::new();
    content(&mut out, s.kind, [&s.tenant, &s.subsidiary, &s.domain, &s.metric], s.dimensions.pairs().map(|(_, v)| Value::Bytes(v)));
    out.into_boxed_slice()
}

/// The index's hasher, seeded from the state's secret key (so a sender
/// cannot aim many scopes at one bucket).
fn index_state(key: &IdentityKey) -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(key.seed())
}

#[derive(Debug, Clone)]
struct Slot {
    data: ScopeData,
    /// The bytes that identify it ([`content`]).
    content: Box<[u8]>,
    /// Its hash in the index.
    hash: u64,
    /// Open aggregates of this scope.
    refs: u32,
    /// The largest |base| and |cost numerator| an aggregate of the scope may hold.
    bounds: Bounds,
}

/// An aggregate's amounts must stay below `limit` once divided: compared
/// with these products, no division or multiplication on the hot path.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub base: Option<Decimal>,
    pub cost: Option<Decimal>,
    /// Both divisors are at least 1: an amount whose mantissa is below the
    /// limit fits (the common case, checked on integers).
    pub mantissa_suffices: bool,
}

impl Bounds {
    fn of(data: &ScopeData) -> Bounds {
        let limit = super::max_amount();
        Bounds {
            base: limit.checked_mul(data.quantity_divisor),
            cost: limit.checked_mul(data.divisor),
            mantissa_suffices: data.quantity_divisor >= Decimal::ONE && data.divisor >= Decimal::ONE,
        }
    }

    /// Whether an aggregate may hold `base` and `cost`.
    pub fn admit(&self, base: Decimal, cost: Decimal) -> bool {
        const LIMIT: u128 = 1_000_000_000_000_000_000_000; // 10^21, max_amount()
        // |value| <= |mantissa| since the scale is never negative.
        if self.mantissa_suffices && base.mantissa().unsigned_abs() < LIMIT && cost.mantissa().unsigned_abs() < LIMIT {
            return true;
        }
        matches!((self.base, self.cost), (Some(b), Some(c)) if base.abs() < b && cost.abs() < c)
    }
}

impl Slot {
    fn new(data: ScopeData, hasher: &foldhash::fast::FixedState) -> Slot {
        let content = stored_content(&data);
        Slot { bounds: Bounds::of(&data), hash: hasher.hash_one(&content[..]), content, data, refs: 0 }
    }
}

/// The index hash of a live slot (for the index's growth).
fn slot_hash(slots: &[Option<Slot>], id: ScopeId) -> u64 {
    slots.get(id as usize).and_then(Option::as_ref).map_or(0, |s| s.hash)
}

/// The scope table of one partition state.
#[derive(Clone)]
pub struct Scopes {
    slots: Vec<Option<Slot>>,
    free: Vec<ScopeId>,
    /// Live ids, by their scope's hash.
    index: HashTable<ScopeId>,
    /// The secret the index's hash is seeded from (kept with the state).
    key: IdentityKey,
    hasher: foldhash::fast::FixedState,
    /// Interned while applying the current record (freed after it if unused).
    recent: Vec<ScopeId>,
    /// Created since the last checkpoint.
    unsaved: Vec<ScopeId>,
    /// The content of the probe being looked up (reused).
    buffer: Vec<u8>,
}

impl Default for Scopes {
    fn default() -> Self {
        let key = IdentityKey::random();
        Scopes {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: index_state(&key),
            key,
            recent: Vec::new(),
            unsaved: Vec::new(),
            buffer: Vec::with_capacity(256),
        }
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scopes").field("live", &self.len()).finish()
    }
}

impl PartialEq for Scopes {
    fn eq(&self, other: &Self) -> bool {
        let live = |s: &Scopes| s.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s.data.clone()))).collect::<Vec<_>>();
        self.key == other.key && live(self) == live(other)
    }
}

impl Eq for Scopes {}

impl Scopes {
    /// The id of the probe's scope, created if new.
    pub fn intern(&mut self, probe: ScopeProbe<'_>) -> ScopeId {
        probe_content(&mut self.buffer, &probe);
        let hash = self.hasher.hash_one(&self.buffer[..]);
        let (slots, content) = (&self.slots, &self.buffer[..]);
        if let Some(&id) = self.index.find(hash, |&id| slots.get(id as usize).and_then(Option::as_ref).is_some_and(|s| *s.content == *content)) {
            return id;
        }
        let slot = Slot::new(probe.to_data(), &self.hasher);
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as ScopeId
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, id, |&id| slot_hash(slots, id));
        self.recent.push(id);
        self.unsaved.push(id);
        id
    }

    pub fn get(&self, id: ScopeId) -> Option<&ScopeData> {
        self.slots.get(id as usize).and_then(|s| s.as_ref()).map(|s| &s.data)
    }

    /// The amount bounds of a scope's aggregates.
    pub fn bounds(&self, id: ScopeId) -> Option<Bounds> {
        self.slots.get(id as usize).and_then(|s| s.as_ref()).map(|s| s.bounds)
    }

    /// One more open aggregate of `id`.
    pub fn retain(&mut self, id: ScopeId) {
        if let Some(Some(slot)) = self.slots.get_mut(id as usize) {
            slot.refs += 1;
        }
    }

    /// One open aggregate of `id` fewer.
    pub fn release(&mut self, id: ScopeId) {
        if let Some(Some(slot)) = self.slots.get_mut(id as usize) {
            slot.refs = slot.refs.saturating_sub(1);
        }
    }

    fn remove(&mut self, id: ScopeId) {
        let Some(slot) = self.slots.get_mut(id as usize).and_then(Option::take) else { return };
        if let Ok(entry) = self.index.find_entry(slot.hash, |&other| other == id) {
            entry.remove();
        }
        self.free.push(id);
    }

    /// Frees the scopes interned by the record just applied that no open
    /// aggregate uses (a refused record leaves nothing behind).
    pub fn sweep_recent(&mut self) {
        while let Some(id) = self.recent.pop() {
            if self.slots.get(id as usize).and_then(|s| s.as_ref()).is_some_and(|s| s.refs == 0) {
                self.remove(id);
            }
        }
    }

    /// Forgets which scopes the current record interned, freeing none (a
    /// state being read, whose references are counted afterwards).
    pub fn forget_recent(&mut self) {
        self.recent.clear();
    }

    /// Frees every scope no open aggregate uses (after a close).
    pub fn sweep_all(&mut self) {
        self.recent.clear();
        let unused: Vec<ScopeId> =
            self.slots.iter().enumerate().filter(|(_, s)| s.as_ref().is_some_and(|s| s.refs == 0)).map(|(i, _)| i as ScopeId).collect();
        for id in unused {
            self.remove(id);
        }
    }

    /// Number of live scopes.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Sets every reference count to 0 (before they are counted again from
    /// the aggregates of a loaded state).
    pub fn reset_refs(&mut self) {
        for slot in self.slots.iter_mut().flatten() {
            slot.refs = 0;
        }
    }

    /// Scopes created since the last call, alive now, in id order.
    pub fn take_unsaved(&mut self) -> Vec<(ScopeId, ScopeData)> {
        let mut ids = std::mem::take(&mut self.unsaved);
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().filter_map(|id| self.get(id).map(|d| (id, d.clone()))).collect()
    }

    pub fn clear_unsaved(&mut self) {
        self.unsaved.clear();
    }

    fn rebuild_index(&mut self) {
        self.index.clear();
        self.free.clear();
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Some(s) => {
                    let slots = &self.slots;
                    self.index.insert_unique(s.hash, i as ScopeId, |&id| slot_hash(slots, id));
                }
                None => self.free.push(i as ScopeId),
            }
        }
        self.free.reverse();
    }

    /// Puts many scopes (a delta) and rebuilds the index once.
    pub fn put_all(&mut self, scopes: Vec<(ScopeId, ScopeData)>) {
        for (id, data) in scopes {
            let index = id as usize;
            if index >= self.slots.len() {
                self.slots.resize_with(index + 1, || None);
            }
            self.slots[index] = Some(Slot::new(data, &self.hasher));
        }
        self.rebuild_index();
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let slots: Vec<Option<&ScopeData>> = self.slots.iter().map(|s| s.as_ref().map(|s| &s.data)).collect();
        (&self.key, slots).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (key, slots): (IdentityKey, Vec<Option<ScopeData>>) = Deserialize::deserialize(d)?;
        let hasher = index_state(&key);
        let slots = slots
            .into_iter()
            .map(|s| s.map(|data| Slot::new(data, &hasher)))
            .collect();
        let mut scopes = Scopes { slots, key, hasher, ..Scopes::default() };
        scopes.rebuild_index();
        Ok(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe<'a>(tenant: &'a str, dims: &'a [(&'a str, DimensionValue<'a>)]) -> ScopeProbe<'a> {
        ScopeProbe {
            kind: EventKind::TicketTime,
            tenant,
            subsidiary: "s",
            domain: "d",
            metric: "ticket.time",
            unit: "minute",
            dimensions: dims,
            quantity_divisor: Decimal::ONE,
            divisor: Decimal::ONE,
        }
    }

    #[test]
    fn equal_scopes_share_an_id_unused_ones_are_freed_and_ids_are_reused() {
        let dims = [("requester", DimensionValue::Text("alice"))];
        let other = [("requester", DimensionValue::Text("bob"))];
        let mut scopes = Scopes::default();
        let a = scopes.intern(probe("acme", &dims));
        assert_eq!(scopes.intern(probe("acme", &dims)), a);
        let b = scopes.intern(probe("acme", &other));
        assert_ne!(a, b);
        assert_ne!(scopes.intern(probe("globex", &dims)), a);
        scopes.retain(a);
        scopes.sweep_recent();
        assert_eq!(scopes.len(), 1, "only the scope an aggregate uses stays");
        assert_eq!(scopes.get(a).map(|s| s.tenant.as_str()), Some("acme"));
        let c = scopes.intern(probe("initech", &dims));
        assert!(c == b || c == a + 1 || scopes.len() == 2);
        assert_eq!(scopes.intern(probe("acme", &dims)), a, "found again after frees");
    }

    #[test]
    fn scopes_differ_when_a_field_moves_between_parts_and_are_equal_only_when_equal() {
        let dims = [("requester", DimensionValue::Text("alice"))];
        let mut scopes = Scopes::default();
        let a = scopes.intern(ScopeProbe { subsidiary: "ab", domain: "c", ..probe("acme", &dims) });
        let b = scopes.intern(ScopeProbe { subsidiary: "a", domain: "bc", ..probe("acme", &dims) });
        assert_ne!(a, b, "length prefixes keep the parts apart");
        let shifted = [("requester", DimensionValue::Text("alic"))];
        assert_ne!(scopes.intern(ScopeProbe { metric: "ticket.timee", ..probe("acme", &shifted) }), scopes.intern(probe("acme", &dims)));
        // Many scopes, each found again as itself (the index only picks candidates).
        let names: Vec<String> = (0..2000).map(|i| format!("user{i}")).collect();
        let ids: Vec<ScopeId> = names.iter().map(|n| scopes.intern(probe("acme", &[("requester", DimensionValue::Text(n))]))).collect();
        for (n, id) in names.iter().zip(&ids) {
            assert_eq!(scopes.intern(probe("acme", &[("requester", DimensionValue::Text(n))])), *id);
            assert_eq!(scopes.get(*id).map(|s| s.dimensions.to_map()["requester"].clone()).as_deref(), Some(n.as_str()));
        }
    }

    #[test]
    fn a_joined_value_is_the_same_scope_as_its_text() {
        let parts = vec!["RUN".to_string(), "MCO".to_string()];
        let joined = [("category", DimensionValue::Joined(&parts, " > "))];
        let text = [("category", DimensionValue::Text("RUN > MCO"))];
        let mut scopes = Scopes::default();
        let a = scopes.intern(probe("acme", &joined));
        assert_eq!(scopes.intern(probe("acme", &text)), a);
        // The value is the joined text: other parts giving the same text are the same value.
        let shifted = vec!["RUN >".to_string(), "MCO".to_string()];
        assert_eq!(scopes.intern(probe("acme", &[("category", DimensionValue::Joined(&shifted, " "))])), a);
        let other = vec!["RUN".to_string(), "MCO ".to_string()];
        assert_ne!(scopes.intern(probe("acme", &[("category", DimensionValue::Joined(&other, " > "))])), a);
        assert_eq!(scopes.get(a).map(|s| s.dimensions.clone()), Some(EncodedDimensions::new([("category", "RUN > MCO")])));
    }

    #[test]
    fn scopes_survive_serialization_and_are_found_after_it() {
        let dims = [("requester", DimensionValue::Text("alice"))];
        let mut scopes = Scopes::default();
        let a = scopes.intern(probe("acme", &dims));
        let b = scopes.intern(probe("globex", &dims));
        scopes.retain(b);
        scopes.sweep_recent();
        let bytes = postcard::to_allocvec(&scopes).unwrap();
        let mut back: Scopes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, scopes);
        assert_eq!(back.intern(probe("globex", &dims)), b);
        let fresh = back.intern(probe("acme", &dims));
        assert_eq!(fresh, a, "the freed slot is reused");
    }
}
