//! Capacity installed per datacenter, for the provider fill rate (capacity
//! sold to running VMs over capacity installed). Its own file, loaded by
//! `meter capacity load FILE` into ClickHouse's `datacenter_capacity`
//! (format and defaults: `config/capacity.toml`).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("cannot read capacity file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("capacity file {path}: {message} (format: config/capacity.toml)")]
    Invalid { path: String, message: String },
}

/// The whole file: one `[[datacenters]]` table per datacenter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityFile {
    pub datacenters: Vec<DatacenterCapacity>,
}

/// What one datacenter can sell. A resource left out (0) has no fill rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacenterCapacity {
    /// As VM usage events carry it (their `datacenter` field), e.g. "par1".
    pub name: String,
    /// vCPUs installed for sale (default 0).
    #[serde(default)]
    pub vcpu: u64,
    /// RAM installed for sale, GiB (default 0).
    #[serde(default)]
    pub ram_gib: u64,
    /// Storage installed for sale, GB (default 0).
    #[serde(default)]
    pub storage_gb: u64,
}

/// Parses and checks a capacity file's text: names not empty and unique,
/// at least one resource per datacenter.
pub fn parse(text: &str, path: &str) -> Result<CapacityFile, CapacityError> {
    let invalid = |message: String| CapacityError::Invalid { path: path.to_string(), message };
    let file: CapacityFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut seen = BTreeSet::new();
    for dc in &file.datacenters {
        if dc.name.trim().is_empty() {
            return Err(invalid("a datacenter has an empty name".into()));
        }
        if !seen.insert(dc.name.as_str()) {
            return Err(invalid(format!("datacenter {:?} is listed twice", dc.name)));
        }
        if dc.vcpu == 0 && dc.ram_gib == 0 && dc.storage_gb == 0 {
            return Err(invalid(format!("datacenter {:?} has no capacity (vcpu, ram_gib, storage_gb all 0)", dc.name)));
        }
    }
    Ok(file)
}

pub fn load(path: &Path) -> Result<CapacityFile, CapacityError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CapacityError::Read { path: display.clone(), source })?;
    parse(&text, &display)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/capacity.toml");
        let file = load(&path).unwrap();
        assert!(!file.datacenters.is_empty());
        assert!(file.datacenters.iter().all(|d| d.vcpu > 0));
    }

    #[test]
    fn defaults_unknown_keys_duplicates_and_empty_capacity() {
        let f = parse("[[datacenters]]\nname = \"par1\"\nvcpu = 64\n", "t").unwrap();
        assert_eq!(f.datacenters[0], DatacenterCapacity { name: "par1".into(), vcpu: 64, ram_gib: 0, storage_gb: 0 });
        let typo = parse("[[datacenters]]\nname = \"par1\"\nvcpus = 64\n", "t").unwrap_err().to_string();
        assert!(typo.contains("vcpus"), "{typo}");
        let twice = parse("[[datacenters]]\nname = \"a\"\nvcpu = 1\n[[datacenters]]\nname = \"a\"\nvcpu = 2\n", "t").unwrap_err().to_string();
        assert!(twice.contains("twice"), "{twice}");
        assert!(parse("[[datacenters]]\nname = \"a\"\n", "t").is_err());
        assert!(parse("[[datacenters]]\nname = \" \"\nvcpu = 1\n", "t").is_err());
    }
}
