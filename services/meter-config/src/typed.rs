//! Values parsed when the file is read, so that a wrong one is refused at
//! start-up with the key's name, and services never parse strings again.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a service serves an HTTP endpoint (`/metrics`): `host:port` with an
/// IP address, or `""` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenAddr(Option<SocketAddr>);

impl ListenAddr {
    /// `127.0.0.1:<port>`: the defaults listen on loopback only.
    pub const fn local(port: u16) -> Self {
        ListenAddr(Some(SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), port)))
    }

    /// No endpoint.
    pub const fn disabled() -> Self {
        ListenAddr(None)
    }

    pub fn addr(self) -> Option<SocketAddr> {
        self.0
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr(Some(addr))
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(ListenAddr(None));
        }
        s.parse::<SocketAddr>().map(|a| ListenAddr(Some(a))).map_err(|_| {
            format!("{s:?} is not an IP address and port such as 127.0.0.1:9601 or 0.0.0.0:9601 (\"\" disables the endpoint)")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => Ok(()),
        }
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An `http://` or `https://` URL of a collected system (GLPI, Icinga, a
/// metrics endpoint), parsed with the file.
pub mod http_url {
    use super::*;
    use url::Url;

    pub fn parse(text: &str) -> Result<Url, String> {
        match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
            _ => Err(format!("{text:?} is not an http(s) URL such as https://glpi.example.com/apirest.php")),
        }
    }

    pub fn serialize<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(url.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An IANA time zone, read from its name with an error that says what to write.
pub mod zone {
    use super::*;
    use chrono_tz::Tz;

    pub fn parse(name: &str) -> Result<Tz, String> {
        name.parse::<Tz>().map_err(|_| format!("unknown time zone {name:?} (use an IANA name such as Europe/Paris or UTC)"))
    }

    pub fn serialize<S: Serializer>(zone: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(zone.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(deserializer)?;
        parse(&name).map_err(serde::de::Error::custom)
    }

    /// The same for an optional zone (`None` when absent).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(zone: &Option<Tz>, serializer: S) -> Result<S::Ok, S::Error> {
            match zone {
                Some(z) => serializer.serialize_some(z.name()),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Tz>, D::Error> {
            Option::<String>::deserialize(deserializer)?.map(|name| parse(&name).map_err(serde::de::Error::custom)).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_once_and_print_back() {
        assert_eq!("".parse::<ListenAddr>(), Ok(ListenAddr::disabled()));
        assert_eq!("127.0.0.1:9601".parse::<ListenAddr>(), Ok(ListenAddr::local(9601)));
        let any: ListenAddr = "0.0.0.0:9604".parse().unwrap();
        assert_eq!(any.to_string(), "0.0.0.0:9604");
        assert_eq!(ListenAddr::disabled().to_string(), "");
        for bad in ["localhost:9601", "9601", "127.0.0.1", "127.0.0.1:99999"] {
            let err = bad.parse::<ListenAddr>().unwrap_err();
            assert!(err.contains(bad) && err.contains("127.0.0.1:9601"), "{err}");
        }
    }

    #[test]
    fn collected_systems_have_http_urls() {
        assert_eq!(http_url::parse("https://glpi.example.com/apirest.php").unwrap().path(), "/apirest.php");
        for bad in ["127.0.0.1:5665", "ftp://x/y", "glpi.example.com", "http://"] {
            assert!(http_url::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn zones_are_checked_with_a_hint() {
        assert_eq!(zone::parse("Europe/Paris"), Ok(chrono_tz::Europe::Paris));
        let err = zone::parse("Europe/Pariss").unwrap_err();
        assert!(err.contains("Europe/Pariss") && err.contains("IANA"), "{err}");
    }
}
