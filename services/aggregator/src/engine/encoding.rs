//! Exact, compact serde forms for the checkpoint (postcard): decimals as
//! their 16 bytes, instants as seconds and nanoseconds, dates as day numbers,
//! zones by IANA name. Nothing is rounded, so a state read back is equal to
//! the state written.

/// `Decimal` as its 16-byte representation (its text form costs a format
/// and a parse per amount).
pub mod decimal {
    use rust_decimal::Decimal;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        d.serialize().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let bytes = <[u8; 16]>::deserialize(d)?;
        // Flags: sign in bit 31, scale in bits 16..24, nothing else.
        let flags = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if flags & 0x7F00_FFFF != 0 || (flags >> 16) & 0xFF > 28 {
            return Err(D::Error::custom("not a decimal"));
        }
        Ok(Decimal::deserialize(bytes))
    }
}

/// `DateTime<Utc>` as (seconds, nanoseconds) since the epoch.
pub mod instant {
    use chrono::{DateTime, Utc};
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        (t.timestamp(), t.timestamp_subsec_nanos()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
        DateTime::from_timestamp(secs, nanos).ok_or_else(|| D::Error::custom("instant out of range"))
    }

    /// `Option<DateTime<Utc>>` in the same form.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            t.map(|t| (t.timestamp(), t.timestamp_subsec_nanos())).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            match <Option<(i64, u32)>>::deserialize(d)? {
                None => Ok(None),
                Some((secs, nanos)) => DateTime::from_timestamp(secs, nanos).map(Some).ok_or_else(|| D::Error::custom("instant out of range")),
            }
        }
    }
}

/// `NaiveDate` as days from the common era.
pub mod date {
    use chrono::{Datelike, NaiveDate};
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(d: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        d.num_days_from_ce().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        let days = i32::deserialize(d)?;
        NaiveDate::from_num_days_from_ce_opt(days).ok_or_else(|| D::Error::custom("date out of range"))
    }
}

/// A time zone by its IANA name.
pub mod zone {
    use chrono_tz::Tz;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        tz.name().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(|_| D::Error::custom(format!("unknown time zone {name:?}")))
    }
}

/// `VmUsage` flat (its header is `#[serde(flatten)]`, which postcard
/// cannot write), instants exact.
pub mod vm_usage {
    use chrono::{DateTime, Utc};
    use meter_model::{EventHeader, SlaTier, VmTransition, VmUsage};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Stored {
        event_id: String,
        source: String,
        tenant: String,
        subsidiary: String,
        domain: String,
        #[serde(with = "super::instant")]
        event_time: DateTime<Utc>,
        #[serde(with = "super::instant")]
        ingest_time: DateTime<Utc>,
        version: i64,
        deleted: bool,
        vm_id: String,
        vcpu: i32,
        ram_mib: i64,
        storage_gb: i64,
        bandwidth_mbps: i32,
        guaranteed_bandwidth: bool,
        public_ips: i32,
        sla_tier: SlaTier,
        options: Vec<String>,
        datacenter: String,
        transition: VmTransition,
        sample_interval_seconds: i32,
    }

    fn stored(v: &VmUsage) -> Stored {
        let h = &v.header;
        Stored {
            event_id: h.event_id.clone(),
            source: h.source.clone(),
            tenant: h.tenant.clone(),
            subsidiary: h.subsidiary.clone(),
            domain: h.domain.clone(),
            event_time: h.event_time,
            ingest_time: h.ingest_time,
            version: h.version,
            deleted: h.deleted,
            vm_id: v.vm_id.clone(),
            vcpu: v.vcpu,
            ram_mib: v.ram_mib,
            storage_gb: v.storage_gb,
            bandwidth_mbps: v.bandwidth_mbps,
            guaranteed_bandwidth: v.guaranteed_bandwidth,
            public_ips: v.public_ips,
            sla_tier: v.sla_tier,
            options: v.options.clone(),
            datacenter: v.datacenter.clone(),
            transition: v.transition,
            sample_interval_seconds: v.sample_interval_seconds,
        }
    }

    fn usage(s: Stored) -> VmUsage {
        VmUsage {
            header: EventHeader {
                event_id: s.event_id,
                source: s.source,
                tenant: s.tenant,
                subsidiary: s.subsidiary,
                domain: s.domain,
                event_time: s.event_time,
                ingest_time: s.ingest_time,
                version: s.version,
                deleted: s.deleted,
            },
            vm_id: s.vm_id,
            vcpu: s.vcpu,
            ram_mib: s.ram_mib,
            storage_gb: s.storage_gb,
            bandwidth_mbps: s.bandwidth_mbps,
            guaranteed_bandwidth: s.guaranteed_bandwidth,
            public_ips: s.public_ips,
            sla_tier: s.sla_tier,
            options: s.options,
            datacenter: s.datacenter,
            transition: s.transition,
            sample_interval_seconds: s.sample_interval_seconds,
        }
    }

    pub fn serialize<S: Serializer>(v: &VmUsage, s: S) -> Result<S::Ok, S::Error> {
        stored(v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VmUsage, D::Error> {
        Stored::deserialize(d).map(usage)
    }

    /// A VM's state: its configuration and whether it runs.
    pub mod state {
        use meter_model::VmUsage;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<(VmUsage, bool)>, s: S) -> Result<S::Ok, S::Error> {
            v.as_ref().map(|(u, running)| (super::stored(u), *running)).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(VmUsage, bool)>, D::Error> {
            Ok(<Option<(super::Stored, bool)>>::deserialize(d)?.map(|(s, running)| (super::usage(s), running)))
        }
    }
}
