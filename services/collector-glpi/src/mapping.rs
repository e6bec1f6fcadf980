//! The mapping file: where a GLPI ticket's time is billed (tenant,
//! subsidiary) and how it is described (technical domain, scope,
//! application, technician profile, requester). Format, with every key and
//! its default: `config/glpi-mapping.example.toml`.
//!
//! GLPI ids are written as TOML keys in quotes (`"3" = ...`); the CSV import
//! looks its `entity`, `technician` and `requester` columns up in the same
//! tables, so non-GLPI tools may use names as keys.

use std::collections::BTreeMap;
use std::path::Path;

use meter_model::TechnicianProfile;
use serde::{Deserialize, Serialize};

use crate::GlpiError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// GLPI entity id (the ticket's `entities_id`) -> who pays. A ticket of an
    /// entity not listed here is dead-lettered (`unmapped_entity`).
    #[serde(default)]
    pub entities: BTreeMap<String, EntityTarget>,
    #[serde(default)]
    pub domains: DomainRules,
    #[serde(default)]
    pub categories: CategoryRules,
    #[serde(default)]
    pub applications: ApplicationRules,
    #[serde(default)]
    pub technicians: TechnicianRules,
    /// GLPI user id (the ticket's `users_id_recipient`) -> requester name.
    /// Unlisted users are reported by their id.
    #[serde(default)]
    pub requesters: BTreeMap<String, String>,
    #[serde(default)]
    pub csv: CsvSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityTarget {
    pub tenant: String,
    pub subsidiary: String,
    /// Country of the subsidiary (ISO code), put on its tickets' time.
    #[serde(default)]
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainRules {
    /// Domain when no rule below matches.
    pub default: String,
    /// ITIL category id -> domain (checked first).
    pub by_category_id: BTreeMap<String, String>,
    /// Category path or a prefix of it, level by level ("RUN > MCO" matches
    /// "RUN > MCO > servers", not "RUN > MCOX") -> domain; the longest wins.
    pub by_category_path: BTreeMap<String, String>,
}

impl Default for DomainRules {
    fn default() -> Self {
        DomainRules { default: "infrastructure".into(), by_category_id: BTreeMap::new(), by_category_path: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoryRules {
    /// Category path prefixes of work out of the contract's scope ("hors
    /// périmètre"): billed from the same budget, flagged `in_scope = false`.
    pub out_of_scope_prefixes: Vec<String>,
    /// Category path given to tickets without an ITIL category.
    pub uncategorized: String,
}

impl Default for CategoryRules {
    fn default() -> Self {
        CategoryRules { out_of_scope_prefixes: vec!["Hors périmètre".into()], uncategorized: "Uncategorized".into() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplicationRules {
    /// Category path prefix -> application (e.g. "RUN > Applications > Sage" = "Sage"); the longest wins.
    pub by_category_path: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TechnicianRules {
    /// Profile of technicians not listed below.
    pub default_profile: TechnicianProfile,
    /// GLPI user id (the task's `users_id_tech`, else `users_id`) -> name and profile.
    pub users: BTreeMap<String, Technician>,
}

impl Default for TechnicianRules {
    fn default() -> Self {
        TechnicianRules { default_profile: TechnicianProfile::Engineer, users: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Technician {
    /// Name on the events (default: the GLPI user id).
    #[serde(default)]
    pub name: Option<String>,
    /// Profile (default: `technicians.default_profile`).
    #[serde(default)]
    pub profile: Option<TechnicianProfile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvSettings {
    /// `source` of the events read from CSV files.
    pub source: String,
    /// Time zone of CSV times written without an offset ("2026-01-12 09:00:00").
    pub time_zone: String,
}

impl Default for CsvSettings {
    fn default() -> Self {
        CsvSettings { source: "csv-import".into(), time_zone: "UTC".into() }
    }
}

/// The levels of a category path ("RUN > MCO > servers"), trimmed.
pub fn path_levels(path: &str) -> Vec<String> {
    path.split('>').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// Whether `path` starts with all the levels of `prefix` (case-insensitive).
fn starts_with_levels(path: &[String], prefix: &[String]) -> bool {
    !prefix.is_empty()
        && prefix.len() <= path.len()
        && path.iter().zip(prefix).all(|(a, b)| a.to_lowercase() == b.to_lowercase())
}

/// The value of the longest prefix rule matching `path`.
fn longest_prefix<'a>(rules: &'a BTreeMap<String, String>, path: &[String]) -> Option<&'a str> {
    rules
        .iter()
        .map(|(prefix, value)| (path_levels(prefix), value))
        .filter(|(levels, _)| starts_with_levels(path, levels))
        .max_by_key(|(levels, _)| levels.len())
        .map(|(_, value)| value.as_str())
}

impl Mapping {
    /// Reads and checks a mapping file.
    pub fn load(path: &Path) -> Result<Mapping, GlpiError> {
        let text = std::fs::read_to_string(path).map_err(|source| GlpiError::Read { path: path.display().to_string(), source })?;
        let mapping = Mapping::parse(&text).map_err(|message| GlpiError::Config { path: path.display().to_string(), message })?;
        Ok(mapping)
    }

    /// Parses and checks the TOML text of a mapping file.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let mapping: Mapping = toml::from_str(text).map_err(|e| e.to_string())?;
        mapping.check()?;
        Ok(mapping)
    }

    fn check(&self) -> Result<(), String> {
        for (key, e) in &self.entities {
            if key.trim().is_empty() || e.tenant.trim().is_empty() || e.subsidiary.trim().is_empty() {
                return Err(format!("entities.{key:?}: the key, tenant and subsidiary must not be empty"));
            }
        }
        for id in self.domains.by_category_id.keys() {
            id.trim().parse::<u64>().map_err(|_| format!("domains.by_category_id: {id:?} is not a GLPI category id (a number)"))?;
        }
        let domains = self.domains.by_category_id.values().chain(self.domains.by_category_path.values());
        if self.domains.default.trim().is_empty() || domains.clone().any(|d| d.trim().is_empty()) {
            return Err("domains: a domain must not be empty".into());
        }
        for prefix in self.domains.by_category_path.keys().chain(self.applications.by_category_path.keys()) {
            if path_levels(prefix).is_empty() {
                return Err(format!("{prefix:?} is not a category path"));
            }
        }
        if path_levels(&self.categories.uncategorized).is_empty() {
            return Err("categories.uncategorized must not be empty".into());
        }
        if self.csv.source.trim().is_empty() {
            return Err("csv.source must not be empty".into());
        }
        self.csv
            .time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| format!("csv.time_zone: unknown time zone {:?} (use an IANA name such as Europe/Paris)", self.csv.time_zone))?;
        Ok(())
    }

    /// Who pays for the tickets of an entity (GLPI id, or a name in CSV files).
    pub fn entity(&self, key: &str) -> Option<&EntityTarget> {
        self.entities.get(key.trim())
    }

    /// The technical domain of a ticket: by category id, else by the longest
    /// matching path prefix, else the default.
    pub fn domain(&self, category_id: Option<u64>, path: &[String]) -> String {
        if let Some(id) = category_id {
            if let Some(d) = self.domains.by_category_id.iter().find(|(k, _)| k.trim().parse::<u64>().ok() == Some(id)) {
                return d.1.clone();
            }
        }
        longest_prefix(&self.domains.by_category_path, path).unwrap_or(&self.domains.default).to_string()
    }

    /// False for work filed under an out-of-scope category.
    pub fn in_scope(&self, path: &[String]) -> bool {
        !self.categories.out_of_scope_prefixes.iter().any(|p| starts_with_levels(path, &path_levels(p)))
    }

    pub fn application(&self, path: &[String]) -> Option<String> {
        longest_prefix(&self.applications.by_category_path, path).map(str::to_string)
    }

    /// The category path of a ticket without a category.
    pub fn uncategorized(&self) -> Vec<String> {
        path_levels(&self.categories.uncategorized)
    }

    /// Name and profile of a technician, by GLPI user id (or name in CSV files).
    pub fn technician(&self, key: &str) -> (String, TechnicianProfile) {
        let key = key.trim();
        let found = self
            .technicians
            .users
            .get(key)
            .map(|t| (key, t))
            .or_else(|| self.technicians.users.iter().find(|(_, t)| t.name.as_deref() == Some(key)).map(|(k, t)| (k.as_str(), t)));
        match found {
            Some((id, t)) => (
                t.name.clone().unwrap_or_else(|| id.to_string()),
                t.profile.unwrap_or(self.technicians.default_profile),
            ),
            None => (key.to_string(), self.technicians.default_profile),
        }
    }

    /// The requester's name, by GLPI user id; unlisted ids stay as they are.
    pub fn requester(&self, key: &str) -> String {
        let key = key.trim();
        self.requesters.get(key).cloned().unwrap_or_else(|| key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../config/glpi-mapping.example.toml");

    fn levels(s: &str) -> Vec<String> {
        path_levels(s)
    }

    #[test]
    fn the_shipped_example_parses_and_maps() {
        let m = Mapping::parse(EXAMPLE).unwrap();
        let fr = m.entity("1").unwrap();
        assert_eq!((fr.tenant.as_str(), fr.subsidiary.as_str(), fr.country.as_deref()), ("acme", "acme-fr", Some("FR")));
        assert!(m.entity("99").is_none());
        // By id first, then the longest path prefix, then the default.
        assert_eq!(m.domain(Some(13), &levels("RUN > MCO > servers")), "network");
        assert_eq!(m.domain(Some(10), &levels("RUN > MCO > servers")), "infrastructure");
        assert_eq!(m.domain(None, &levels("RUN > Workstations > laptops")), "workstation");
        assert_eq!(m.domain(None, &levels("BUILD > project")), m.domains.default);
        assert!(!m.in_scope(&levels("Hors périmètre > Déménagement")));
        assert!(!m.in_scope(&levels("hors PÉRIMÈTRE")), "case-insensitive");
        assert!(m.in_scope(&levels("RUN > MCO > backups")));
        assert_eq!(m.application(&levels("RUN > Applications > Sage > paie")).as_deref(), Some("Sage"));
        assert_eq!(m.technician("7"), ("bob".to_string(), TechnicianProfile::Architect));
        assert_eq!(m.technician("bob"), ("bob".to_string(), TechnicianProfile::Architect), "CSV files name technicians");
        assert_eq!(m.technician("8"), ("8".to_string(), TechnicianProfile::Engineer));
        assert_eq!(m.requester("12"), "marie.dupont");
        assert_eq!(m.requester("33"), "33");
    }

    #[test]
    fn prefixes_match_whole_levels() {
        let mut rules = BTreeMap::new();
        rules.insert("RUN > MCO".to_string(), "a".to_string());
        rules.insert("RUN".to_string(), "b".to_string());
        assert_eq!(longest_prefix(&rules, &levels("RUN > MCO > servers")), Some("a"));
        assert_eq!(longest_prefix(&rules, &levels("RUN > MCOX")), Some("b"));
        assert_eq!(longest_prefix(&rules, &levels("BUILD")), None);
    }

    #[test]
    fn defaults_and_refusals() {
        let m = Mapping::parse("").unwrap();
        assert_eq!(m, Mapping::default());
        assert_eq!(m.technician("5").1, TechnicianProfile::Engineer);
        assert_eq!(m.uncategorized(), vec!["Uncategorized".to_string()]);
        assert!(Mapping::parse("[entitys]\n").unwrap_err().contains("entitys"));
        assert!(Mapping::parse("[domains.by_category_id]\nnetwork = \"network\"\n").unwrap_err().contains("category id"));
        assert!(Mapping::parse("[entities.\"3\"]\ntenant = \"acme\"\nsubsidiary = \"\"\n").is_err());
        assert!(Mapping::parse("[technicians]\ndefault_profile = \"WIZARD\"\n").is_err());
        assert!(Mapping::parse("[csv]\ntime_zone = \"Europe/Pariss\"\n").unwrap_err().contains("Europe/Pariss"));
    }
}
