//! The bearer tokens of the HTTP intakes (`meter ingest-api` and the
//! supervision collector's `/v1/actions/process-check-result` and `/nrdp/`):
//! one implementation, one set of rules.
//!
//! - A token has at least [`MIN_TOKEN_CHARS`] characters, and no whitespace
//!   or control character ([`check_secret`]).
//! - The same token is never given to two callers.
//! - Only SHA-256 digests are kept; a presented token is hashed and compared
//!   with **every** known digest in constant time ([`subtle`]), so neither the
//!   secrets nor which entry matched show in the time taken.
//! - `Debug` of a table shows the names of its entries, never a secret.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Tokens shorter than this are refused: a bearer token is a password.
pub const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token must have at least {MIN_TOKEN_CHARS} characters (it has {0})")]
    TooShort(usize),
    #[error("the token must not contain spaces or control characters")]
    BadCharacter,
    #[error("the same token is already given to {0:?}")]
    Duplicate(String),
}

/// Checks a secret against the rules (length, characters).
pub fn check_secret(secret: &str) -> Result<(), TokenError> {
    let chars = secret.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(TokenError::TooShort(chars));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::BadCharacter);
    }
    Ok(())
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The token of an `Authorization: Bearer TOKEN` header value (the scheme
/// is case-insensitive); `None` for another scheme or an empty token.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Named entries `A`, each with its token, kept as digests.
#[derive(Clone)]
pub struct TokenTable<A> {
    entries: Vec<([u8; 32], String, A)>,
}

impl<A> Default for TokenTable<A> {
    fn default() -> Self {
        TokenTable { entries: Vec::new() }
    }
}

impl<A> fmt::Debug for TokenTable<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable").field("names", &self.entries.iter().map(|(_, n, _)| n).collect::<Vec<_>>()).finish()
    }
}

impl<A> TokenTable<A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the entry `name` with its token, after checking the rules; a
    /// token already given to another entry is refused.
    pub fn insert(&mut self, name: &str, secret: &str, access: A) -> Result<(), TokenError> {
        check_secret(secret)?;
        let hash = digest(secret);
        if let Some((_, other, _)) = self.entries.iter().find(|(h, _, _)| bool::from(h[..].ct_eq(&hash[..]))) {
            return Err(TokenError::Duplicate(other.clone()));
        }
        self.entries.push((hash, name.to_string(), access));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a presented token, if it is a known one. Every digest is
    /// compared, in constant time, whatever matches.
    pub fn find(&self, presented: &str) -> Option<&A> {
        if presented.is_empty() {
            return None;
        }
        let hash = digest(presented);
        let mut found = None;
        for (h, _, access) in &self.entries {
            let equal: bool = h[..].ct_eq(&hash[..]).into();
            if equal && found.is_none() {
                found = Some(access);
            }
        }
        found
    }

    /// The entry of an `Authorization` header value `Bearer <known token>`.
    pub fn authorize(&self, authorization: Option<&str>) -> Option<&A> {
        self.find(bearer(authorization?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_refuse_short_spaced_and_shared_tokens() {
        assert_eq!(check_secret("short-token"), Err(TokenError::TooShort(11)));
        assert_eq!(check_secret("0123456789abcde"), Err(TokenError::TooShort(15)));
        assert!(check_secret("0123456789abcdef").is_ok());
        assert_eq!(check_secret("0123456789 abcdef"), Err(TokenError::BadCharacter));
        assert_eq!(check_secret("0123456789\nabcdef"), Err(TokenError::BadCharacter));
        let mut t = TokenTable::new();
        t.insert("a", "0123456789abcdef", 1).unwrap();
        assert_eq!(t.insert("b", "0123456789abcdef", 2), Err(TokenError::Duplicate("a".into())));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn tokens_are_found_exactly_and_bearer_headers_read() {
        let mut t = TokenTable::new();
        t.insert("a", "token-of-a-0123456789", 'a').unwrap();
        t.insert("b", "token-of-b-0123456789", 'b').unwrap();
        assert_eq!(t.find("token-of-a-0123456789"), Some(&'a'));
        assert_eq!(t.find("token-of-b-0123456789"), Some(&'b'));
        for refused in ["", "token-of-a-012345678", "token-of-a-0123456789x", "TOKEN-OF-A-0123456789"] {
            assert_eq!(t.find(refused), None, "{refused:?}");
        }
        assert_eq!(t.authorize(Some("Bearer token-of-a-0123456789")), Some(&'a'));
        assert_eq!(t.authorize(Some("bearer  token-of-b-0123456789 ")), Some(&'b'));
        for refused in [None, Some(""), Some("Bearer"), Some("Bearer "), Some("Basic token-of-a-0123456789"), Some("token-of-a-0123456789")] {
            assert_eq!(t.authorize(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn debug_shows_names_not_secrets() {
        let mut t = TokenTable::new();
        t.insert("icinga-paris", "a-very-secret-token-value", ()).unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("icinga-paris") && !shown.contains("a-very-secret"), "{shown}");
    }
}
