//! The price book: prices with validity dates, per-tenant overrides and the
//! rounding rule (format: `config/price-book.toml`).
//!
//! Cost of an aggregate = round(Σ base_quantity × unit_price / divisor) where
//! the sum runs over the aggregate's events, each priced at the price valid at
//! its instant, computed exactly in decimal, and rounded once, at the end, to
//! `rounding.scale` decimals with `rounding.mode`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use meter_model::{CheckFrequency, SlaTier, TechnicianProfile};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum PriceBookError {
    #[error("cannot read price book {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("price book {path} is invalid: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RatingError {
    #[error("no price valid at {0} (the price book's first period starts later)")]
    NoPriceAt(DateTime<Utc>),
    #[error("option {0:?} has no price in the price book")]
    UnknownOption(String),
    #[error("SLA tier {0:?} has no multiplier in the price book")]
    UnknownSlaTier(SlaTier),
    #[error("amount overflow while rating")]
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    HalfEven,
    HalfUp,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rounding {
    pub scale: u32,
    pub mode: RoundingMode,
}

/// Every price, all optional so that one sheet type serves both the base
/// periods (which must be complete) and tenant overrides (partial).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSheet {
    pub vcpu_hour: Option<Decimal>,
    pub ram_gib_hour: Option<Decimal>,
    pub storage_gb_hour: Option<Decimal>,
    pub public_ip_hour: Option<Decimal>,
    pub bandwidth_mbps_hour: Option<Decimal>,
    pub guaranteed_bandwidth_multiplier: Option<Decimal>,
    #[serde(default)]
    pub sla_multiplier: BTreeMap<SlaTier, Decimal>,
    #[serde(default)]
    pub option_hour: BTreeMap<String, Decimal>,
    #[serde(default)]
    pub ticket_hour: BTreeMap<TechnicianProfile, Decimal>,
    #[serde(default)]
    pub check_run: BTreeMap<CheckFrequency, Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricePeriod {
    pub valid_from: DateTime<Utc>,
    #[serde(flatten)]
    pub prices: PriceSheet,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverride {
    pub tenant: String,
    pub valid_from: DateTime<Utc>,
    #[serde(flatten)]
    pub prices: PriceSheet,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBook {
    /// Written on every aggregate it rated.
    pub version: String,
    pub currency: String,
    pub rounding: Rounding,
    pub periods: Vec<PricePeriod>,
    #[serde(default)]
    pub overrides: Vec<TenantOverride>,
}

/// The complete prices in force for one tenant at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    pub vcpu_hour: Decimal,
    pub ram_gib_hour: Decimal,
    pub storage_gb_hour: Decimal,
    pub public_ip_hour: Decimal,
    pub bandwidth_mbps_hour: Decimal,
    pub guaranteed_bandwidth_multiplier: Decimal,
    pub sla_multiplier: BTreeMap<SlaTier, Decimal>,
    pub option_hour: BTreeMap<String, Decimal>,
    pub ticket_hour: BTreeMap<TechnicianProfile, Decimal>,
    pub check_run: BTreeMap<CheckFrequency, Decimal>,
}

impl PriceBook {
    pub fn load(path: &Path) -> Result<PriceBook, PriceBookError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PriceBookError::Read { path: display.clone(), source })?;
        Self::parse(&text).map_err(|message| PriceBookError::Invalid { path: display, message })
    }

    pub fn parse(text: &str) -> Result<PriceBook, String> {
        let mut book: PriceBook = toml::from_str(text).map_err(|e| e.to_string())?;
        book.periods.sort_by_key(|p| p.valid_from);
        book.overrides.sort_by_key(|o| o.valid_from);
        if book.periods.is_empty() {
            return Err("at least one [[periods]] entry is needed".into());
        }
        for p in &book.periods {
            let s = &p.prices;
            let missing: Vec<&str> = [
                ("vcpu_hour", s.vcpu_hour.is_none()),
                ("ram_gib_hour", s.ram_gib_hour.is_none()),
                ("storage_gb_hour", s.storage_gb_hour.is_none()),
                ("public_ip_hour", s.public_ip_hour.is_none()),
                ("bandwidth_mbps_hour", s.bandwidth_mbps_hour.is_none()),
                ("guaranteed_bandwidth_multiplier", s.guaranteed_bandwidth_multiplier.is_none()),
                ("sla_multiplier (all three tiers)", s.sla_multiplier.len() != 3),
                ("ticket_hour (all four profiles)", s.ticket_hour.len() != 4),
                ("check_run (all five frequencies)", s.check_run.len() != 5),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            if !missing.is_empty() {
                return Err(format!("period valid from {} lacks {}", p.valid_from, missing.join(", ")));
            }
            let negative = [s.vcpu_hour, s.ram_gib_hour, s.storage_gb_hour, s.public_ip_hour, s.bandwidth_mbps_hour]
                .into_iter()
                .flatten()
                .chain(s.ticket_hour.values().copied())
                .chain(s.check_run.values().copied())
                .chain(s.option_hour.values().copied())
                .any(|d| d.is_sign_negative());
            if negative {
                return Err(format!("period valid from {} has a negative price", p.valid_from));
            }
        }
        if book.rounding.scale > 6 {
            return Err("rounding.scale must be at most 6 (the schemas keep 6 decimals)".into());
        }
        Ok(book)
    }

    /// The instants at which some price of this tenant changes, in order.
    pub fn change_instants(&self, tenant: &str) -> Vec<DateTime<Utc>> {
        let mut instants: Vec<_> = self
            .periods
            .iter()
            .map(|p| p.valid_from)
            .chain(self.overrides.iter().filter(|o| o.tenant == tenant).map(|o| o.valid_from))
            .collect();
        instants.sort();
        instants.dedup();
        instants
    }

    /// The prices in force for `tenant` at `at`: the latest base period that
    /// started at or before `at`, with the tenant's latest override on top.
    pub fn prices_at(&self, tenant: &str, at: DateTime<Utc>) -> Result<Prices, RatingError> {
        let base = self.periods.iter().rev().find(|p| p.valid_from <= at).ok_or(RatingError::NoPriceAt(at))?;
        let b = &base.prices;
        // Missing base fields were refused at load time.
        let mut prices = Prices {
            vcpu_hour: b.vcpu_hour.unwrap_or_default(),
            ram_gib_hour: b.ram_gib_hour.unwrap_or_default(),
            storage_gb_hour: b.storage_gb_hour.unwrap_or_default(),
            public_ip_hour: b.public_ip_hour.unwrap_or_default(),
            bandwidth_mbps_hour: b.bandwidth_mbps_hour.unwrap_or_default(),
            guaranteed_bandwidth_multiplier: b.guaranteed_bandwidth_multiplier.unwrap_or(Decimal::ONE),
            sla_multiplier: b.sla_multiplier.clone(),
            option_hour: b.option_hour.clone(),
            ticket_hour: b.ticket_hour.clone(),
            check_run: b.check_run.clone(),
        };
        // Overrides compose: each replaces only the prices it names, from its
        // valid_from on, over the base and the earlier overrides.
        for o in self.overrides.iter().filter(|o| o.tenant == tenant && o.valid_from <= at) {
            let o = &o.prices;
            prices.vcpu_hour = o.vcpu_hour.unwrap_or(prices.vcpu_hour);
            prices.ram_gib_hour = o.ram_gib_hour.unwrap_or(prices.ram_gib_hour);
            prices.storage_gb_hour = o.storage_gb_hour.unwrap_or(prices.storage_gb_hour);
            prices.public_ip_hour = o.public_ip_hour.unwrap_or(prices.public_ip_hour);
            prices.bandwidth_mbps_hour = o.bandwidth_mbps_hour.unwrap_or(prices.bandwidth_mbps_hour);
            prices.guaranteed_bandwidth_multiplier =
                o.guaranteed_bandwidth_multiplier.unwrap_or(prices.guaranteed_bandwidth_multiplier);
            prices.sla_multiplier.extend(o.sla_multiplier.clone());
            prices.option_hour.extend(o.option_hour.clone());
            prices.ticket_hour.extend(o.ticket_hour.clone());
            prices.check_run.extend(o.check_run.clone());
        }
        Ok(prices)
    }

    /// The latest price a sheet names for `tenant` at `at`: the newest
    /// override in force that names it, else the base period in force. No
    /// price is copied (the hot path rates tickets and checks with this).
    fn lookup<T>(&self, tenant: &str, at: DateTime<Utc>, pick: impl Fn(&PriceSheet) -> Option<T>) -> Result<Option<T>, RatingError> {
        let base = self.periods.iter().rev().find(|p| p.valid_from <= at).ok_or(RatingError::NoPriceAt(at))?;
        let over = self.overrides.iter().rev().filter(|o| o.tenant == tenant && o.valid_from <= at).find_map(|o| pick(&o.prices));
        Ok(over.or_else(|| pick(&base.prices)))
    }

    /// Hourly rate of a technician profile for `tenant` at `at`.
    pub fn ticket_hour(&self, tenant: &str, at: DateTime<Utc>, profile: TechnicianProfile) -> Result<Decimal, RatingError> {
        Ok(self.lookup(tenant, at, |s| s.ticket_hour.get(&profile).copied())?.unwrap_or_default())
    }

    /// Price of one check run of `frequency` for `tenant` at `at`.
    pub fn check_run(&self, tenant: &str, at: DateTime<Utc>, frequency: CheckFrequency) -> Result<Decimal, RatingError> {
        Ok(self.lookup(tenant, at, |s| s.check_run.get(&frequency).copied())?.unwrap_or_default())
    }

    /// Rounds an exact amount by the book's rule.
    pub fn round(&self, exact: Decimal) -> Decimal {
        let strategy = match self.rounding.mode {
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
        };
        exact.round_dp_with_strategy(self.rounding.scale, strategy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn book() -> PriceBook {
        PriceBook::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn shipped_price_book_loads_and_changes_price_at_its_date() {
        let b = book();
        let before = b.prices_at("other", at("2024-12-31T23:59:59Z")).unwrap();
        let after = b.prices_at("other", at("2025-01-01T00:00:00Z")).unwrap();
        assert_ne!(before.ticket_hour[&TechnicianProfile::Engineer], after.ticket_hour[&TechnicianProfile::Engineer]);
        assert!(b.prices_at("other", at("2018-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn a_tenant_override_replaces_only_what_it_names() {
        let b = book();
        let base = b.prices_at("other", at("2024-06-01T00:00:00Z")).unwrap();
        let globex = b.prices_at("globex", at("2024-06-01T00:00:00Z")).unwrap();
        assert_ne!(globex.ticket_hour[&TechnicianProfile::Engineer], base.ticket_hour[&TechnicianProfile::Engineer]);
        assert_eq!(globex.ticket_hour[&TechnicianProfile::Architect], base.ticket_hour[&TechnicianProfile::Architect]);
        assert_eq!(globex.vcpu_hour, base.vcpu_hour);
    }

    #[test]
    fn hot_path_lookups_agree_with_the_full_price_sheet() {
        let b = book();
        for tenant in ["globex", "other"] {
            for instant in ["2024-06-01T00:00:00Z", "2025-06-01T00:00:00Z"].map(at) {
                let full = b.prices_at(tenant, instant).unwrap();
                for profile in [TechnicianProfile::Administrator, TechnicianProfile::Engineer, TechnicianProfile::Architect] {
                    assert_eq!(b.ticket_hour(tenant, instant, profile).unwrap(), full.ticket_hour[&profile]);
                }
                assert_eq!(b.check_run(tenant, instant, CheckFrequency::Weekly).unwrap(), full.check_run[&CheckFrequency::Weekly]);
            }
        }
    }

    #[test]
    fn two_overrides_of_one_tenant_compose() {
        let mut b = book();
        let base = b.prices_at("initech", at("2025-06-01T00:00:00Z")).unwrap();
        let rates_2019 = PriceSheet { ticket_hour: [(TechnicianProfile::Engineer, dec!(70))].into(), ..PriceSheet::default() };
        let vcpu_2025 = PriceSheet { vcpu_hour: Some(dec!(0.5)), ..PriceSheet::default() };
        b.overrides.push(TenantOverride { tenant: "initech".into(), valid_from: at("2019-01-01T00:00:00Z"), prices: rates_2019 });
        b.overrides.push(TenantOverride { tenant: "initech".into(), valid_from: at("2025-01-01T00:00:00Z"), prices: vcpu_2025 });
        // 2024: only the 2019 override is in force.
        let p2024 = b.prices_at("initech", at("2024-06-01T00:00:00Z")).unwrap();
        assert_eq!(p2024.ticket_hour[&TechnicianProfile::Engineer], dec!(70));
        assert_ne!(p2024.vcpu_hour, dec!(0.5));
        // 2025: both apply, and the rest is the base.
        let p2025 = b.prices_at("initech", at("2025-06-01T00:00:00Z")).unwrap();
        assert_eq!(p2025.ticket_hour[&TechnicianProfile::Engineer], dec!(70));
        assert_eq!(p2025.vcpu_hour, dec!(0.5));
        assert_eq!(p2025.ram_gib_hour, base.ram_gib_hour);
        assert_eq!(p2025.ticket_hour[&TechnicianProfile::Architect], base.ticket_hour[&TechnicianProfile::Architect]);
        // The hot-path lookup agrees.
        assert_eq!(b.ticket_hour("initech", at("2025-06-01T00:00:00Z"), TechnicianProfile::Engineer).unwrap(), dec!(70));
    }

    #[test]
    fn rounding_follows_the_stated_mode() {
        let mut b = book();
        b.rounding = Rounding { scale: 2, mode: RoundingMode::HalfEven };
        assert_eq!(b.round(dec!(0.125)), dec!(0.12));
        assert_eq!(b.round(dec!(0.135)), dec!(0.14));
        b.rounding.mode = RoundingMode::HalfUp;
        assert_eq!(b.round(dec!(0.125)), dec!(0.13));
        assert_eq!(b.round(dec!(-0.125)), dec!(-0.13));
    }

    #[test]
    fn incomplete_or_negative_books_are_refused() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).unwrap();
        let err = PriceBook::parse(&text.replacen("vcpu_hour = ", "# vcpu_hour = ", 1)).unwrap_err();
        assert!(err.contains("vcpu_hour"), "{err}");
        let err = PriceBook::parse(&text.replacen("ENGINEER = \"", "ENGINEER = \"-", 1)).unwrap_err();
        assert!(err.contains("negative"), "{err}");
    }
}
