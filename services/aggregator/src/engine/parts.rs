//! What an event added to its aggregates, kept for every event of an open
//! month so that a correction or a deletion takes it back exactly.
//!
//! Millions of these are held, so the common shape (a ticket or a check
//! run: one scope, one window per period, the same amounts in each) is
//! packed into 48 bytes: the latest window start plus each period's start
//! as seconds before it, and each amount as a 64-bit mantissa and a scale.
//! What does not fit (an amount beyond 2⁶³ units of its scale, a window
//! start off the second) is kept as a list of parts instead, exactly.
//! Checkpoints hold the unpacked form, so their format does not change.

use std::num::NonZeroU8;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::encoding;
use super::scopes::ScopeId;
use super::AggKey;
use meter_model::Period;

use super::calendar::period_index;

/// A window start absent from a packed contribution (a period not configured).
pub const NO_WINDOW: i64 = i64::MIN;

/// What an event added to one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub key: AggKey,
    #[serde(with = "encoding::decimal")]
    pub base: Decimal,
    #[serde(with = "encoding::decimal")]
    pub cost: Decimal,
    /// Whether the event's counts went into this aggregate.
    pub counted: bool,
}

/// What an event added to its aggregates. Nothing (a deletion; a VM
/// transition, whose timeline bills it) is an empty list: two variants let
/// the enum take its tag from a niche of [`Packed`] (48 bytes, not 56).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parts {
    /// One scope, one window per configured period, the same amounts and
    /// counts in each: tickets and check runs.
    Windows(Packed),
    /// One part per aggregate: VM samples, and what does not pack.
    List(Box<[Part]>),
}

/// [`Parts::Windows`], packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// The latest window start, milliseconds since the epoch.
    anchor_ms: i64,
    base_mantissa: i64,
    cost_mantissa: i64,
    /// Seconds from each period's window start to the anchor, by period
    /// index; `ABSENT` for a period not configured.
    back_s: [u32; 4],
    scope: ScopeId,
    /// The base's scale plus one (never zero: the enum's niche).
    base_scale: NonZeroU8,
    cost_scale: u8,
}

const ABSENT: u32 = u32::MAX;

/// A decimal as (mantissa, scale) when its mantissa fits 64 bits.
fn split(d: Decimal) -> Option<(i64, u8)> {
    Some((i64::try_from(d.mantissa()).ok()?, u8::try_from(d.scale()).ok()?))
}

fn join(mantissa: i64, scale: u8) -> Decimal {
    // The scale came from a decimal, so it is at most 28.
    Decimal::try_from_i128_with_scale(i128::from(mantissa), u32::from(scale)).unwrap_or(Decimal::ZERO)
}

impl Packed {
    fn pack(scope: ScopeId, starts: [i64; 4], base: Decimal, cost: Decimal) -> Option<Packed> {
        let anchor_ms = starts.iter().copied().filter(|s| *s != NO_WINDOW).max().unwrap_or(0);
        let mut back_s = [ABSENT; 4];
        for (back, start) in back_s.iter_mut().zip(starts) {
            if start != NO_WINDOW {
                let ms = anchor_ms.checked_sub(start)?;
                if ms % 1000 != 0 {
                    return None;
                }
                *back = u32::try_from(ms / 1000).ok().filter(|s| *s != ABSENT)?;
            }
        }
        let ((base_mantissa, base_scale), (cost_mantissa, cost_scale)) = (split(base)?, split(cost)?);
        let base_scale = NonZeroU8::new(base_scale.checked_add(1)?)?;
        Some(Packed { anchor_ms, base_mantissa, cost_mantissa, back_s, scope, base_scale, cost_scale })
    }

    fn starts(&self) -> [i64; 4] {
        self.back_s.map(|back| if back == ABSENT { NO_WINDOW } else { self.anchor_ms - i64::from(back) * 1000 })
    }

    fn base(&self) -> Decimal {
        join(self.base_mantissa, self.base_scale.get() - 1)
    }

    fn cost(&self) -> Decimal {
        join(self.cost_mantissa, self.cost_scale)
    }
}

impl Parts {
    /// Nothing.
    pub fn none() -> Parts {
        Parts::List(Box::default())
    }

    /// One scope, a window start per period index ([`NO_WINDOW`]: none),
    /// the same amounts in each window.
    pub fn windows(scope: ScopeId, starts: [i64; 4], base: Decimal, cost: Decimal) -> Parts {
        match Packed::pack(scope, starts, base, cost) {
            Some(packed) => Parts::Windows(packed),
            None => Parts::List(list(scope, starts, base, cost)),
        }
    }

    /// Each aggregate the event went into: its key, what the event added,
    /// and whether the event's counts went in.
    pub fn for_each(&self, mut f: impl FnMut(AggKey, Decimal, Decimal, bool)) {
        match self {
            Parts::Windows(p) => {
                let (base, cost) = (p.base(), p.cost());
                for (period, start) in Period::ALL.into_iter().zip(p.starts()) {
                    if start != NO_WINDOW {
                        f(AggKey { scope: p.scope, period, start_ms: start }, base, cost, true);
                    }
                }
            }
            Parts::List(parts) => {
                for part in parts.iter() {
                    f(part.key, part.base, part.cost, part.counted);
                }
            }
        }
    }
}

fn list(scope: ScopeId, starts: [i64; 4], base: Decimal, cost: Decimal) -> Box<[Part]> {
    Period::ALL
        .into_iter()
        .filter(|p| starts[period_index(*p)] != NO_WINDOW)
        .map(|period| Part { key: AggKey { scope, period, start_ms: starts[period_index(period)] }, base, cost, counted: true })
        .collect()
}

/// The checkpoint form (snapshot format 2): `Windows` unpacked.
#[derive(Serialize)]
#[serde(rename = "Parts")]
enum WireRef<'a> {
    None,
    Windows {
        scope: ScopeId,
        starts: [i64; 4],
        #[serde(with = "encoding::decimal")]
        base: Decimal,
        #[serde(with = "encoding::decimal")]
        cost: Decimal,
    },
    List(&'a [Part]),
}

#[derive(Deserialize)]
#[serde(rename = "Parts")]
enum Wire {
    None,
    Windows {
        scope: ScopeId,
        starts: [i64; 4],
        #[serde(with = "encoding::decimal")]
        base: Decimal,
        #[serde(with = "encoding::decimal")]
        cost: Decimal,
    },
    List(Box<[Part]>),
}

impl Serialize for Parts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Parts::List(parts) if parts.is_empty() => WireRef::None,
            Parts::Windows(p) => WireRef::Windows { scope: p.scope, starts: p.starts(), base: p.base(), cost: p.cost() },
            Parts::List(parts) => WireRef::List(parts),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Parts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::None => Parts::none(),
            Wire::Windows { scope, starts, base, cost } => Parts::windows(scope, starts, base, cost),
            Wire::List(parts) => Parts::List(parts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contributions(p: &Parts) -> Vec<(AggKey, Decimal, Decimal, bool)> {
        let mut out = Vec::new();
        p.for_each(|k, b, c, counted| out.push((k, b, c, counted)));
        out
    }

    #[test]
    fn the_common_shape_is_packed_into_48_bytes() {
        assert!(std::mem::size_of::<Parts>() <= 48, "{}", std::mem::size_of::<Parts>());
        // What the aggregator holds per event of an open month, besides its 16-byte identity.
        assert!(std::mem::size_of::<super::super::CountedEvent>() <= 72, "{}", std::mem::size_of::<super::super::CountedEvent>());
        assert!(std::mem::size_of::<(super::super::EventId, super::super::CountedEvent)>() <= 88);
        let day = 1_767_222_000_000; // 2026-01-01 00:00 Paris
        let p = Parts::windows(7, [day, day - 3 * 86_400_000, day, day], Decimal::from(42), Decimal::new(123_456, 2));
        assert!(matches!(p, Parts::Windows(_)));
    }

    #[test]
    fn what_does_not_pack_is_kept_exactly_as_a_list() {
        let huge = Decimal::from_i128_with_scale(10i128.pow(25), 3);
        let off_second = [1_000_500, 0, NO_WINDOW, NO_WINDOW];
        for (starts, base) in [([5_000, 0, NO_WINDOW, NO_WINDOW], huge), (off_second, Decimal::ONE)] {
            let p = Parts::windows(1, starts, base, Decimal::ONE);
            assert!(matches!(p, Parts::List(_)), "{p:?}");
            let got = contributions(&p);
            assert_eq!(got.len(), 2);
            assert_eq!((got[0].0.start_ms, got[0].1, got[1].0.start_ms), (starts[0], base, starts[1]));
        }
    }

    /// The enum checkpoints held before packing (snapshot format 2).
    #[derive(Serialize)]
    enum Before {
        None,
        Windows {
            scope: ScopeId,
            starts: [i64; 4],
            #[serde(with = "encoding::decimal")]
            base: Decimal,
            #[serde(with = "encoding::decimal")]
            cost: Decimal,
        },
        List(Box<[Part]>),
    }

    #[test]
    fn checkpoints_keep_the_bytes_of_snapshot_format_2() {
        let day = 1_767_222_000_000;
        let starts = [day, day - 3 * 86_400_000, day, day];
        let (base, cost) = (Decimal::from(90), Decimal::new(13_500, 2));
        let before = postcard::to_allocvec(&Before::Windows { scope: 3, starts, base, cost }).unwrap();
        let packed = Parts::windows(3, starts, base, cost);
        assert!(matches!(packed, Parts::Windows(_)));
        assert_eq!(postcard::to_allocvec(&packed).unwrap(), before);
        assert_eq!(postcard::from_bytes::<Parts>(&before).unwrap(), packed);
        let part = Part { key: AggKey { scope: 1, period: Period::Day, start_ms: day }, base, cost, counted: false };
        let list = Parts::List(vec![part.clone()].into_boxed_slice());
        assert_eq!(postcard::to_allocvec(&list).unwrap(), postcard::to_allocvec(&Before::List(vec![part].into_boxed_slice())).unwrap());
        let none = postcard::to_allocvec(&Before::None).unwrap();
        assert_eq!(postcard::to_allocvec(&Parts::none()).unwrap(), none);
        assert_eq!(postcard::from_bytes::<Parts>(&none).unwrap(), Parts::none());
    }

    proptest! {
        /// Packed or not, the contributions are the windows and amounts
        /// given, and a checkpoint round trip keeps them (the wire form is
        /// the unpacked one).
        #[test]
        fn parts_give_back_what_they_were_given(
            scope in 0u32..1000,
            anchor in -4_000_000_000_000i64..4_000_000_000_000,
            // Seconds back from the anchor, sometimes off the second.
            backs in proptest::array::uniform4(proptest::option::of((0i64..40_000_000, 0u8..8))),
            base in (any::<i64>(), 0u32..29),
            // Mostly within 64 bits, sometimes beyond.
            cost in (prop_oneof![4 => any::<i64>().prop_map(i128::from), 1 => any::<i128>()], 0u32..29),
        ) {
            let starts = backs.map(|b| b.map_or(NO_WINDOW, |(s, off)| anchor - s * 1000 - i64::from(off == 0)));
            let base = Decimal::from_i128_with_scale(i128::from(base.0), base.1);
            let cost = Decimal::try_from_i128_with_scale(cost.0 % 10i128.pow(28), cost.1).unwrap_or(Decimal::ONE);
            let p = Parts::windows(scope, starts, base, cost);
            let latest = starts.iter().copied().filter(|s| *s != NO_WINDOW).max().unwrap_or(0);
            let packable = starts.iter().all(|s| *s == NO_WINDOW || (latest - s) % 1000 == 0) && i64::try_from(cost.mantissa()).is_ok();
            prop_assert_eq!(matches!(p, Parts::Windows(_)), packable);
            let expected: Vec<_> = Period::ALL.into_iter().zip(starts).filter(|(_, s)| *s != NO_WINDOW)
                .map(|(period, s)| (AggKey { scope, period, start_ms: s }, base, cost, true)).collect();
            let got = contributions(&p);
            prop_assert_eq!(&got, &expected);
            // Scales are kept too (1.50 stays 1.50, not 1.5).
            for (_, b, c, _) in &got {
                prop_assert_eq!((b.scale(), c.scale()), (base.scale(), cost.scale()));
            }
            let back: Parts = postcard::from_bytes(&postcard::to_allocvec(&p).unwrap()).unwrap();
            prop_assert_eq!(contributions(&back), expected);
            prop_assert_eq!(back, p);
        }
    }
}
