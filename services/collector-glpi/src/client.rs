//! A small client of GLPI's REST API (`apirest.php`, documented in GLPI's
//! `apirest.md`): `initSession` with `Authorization: user_token ...` (and the
//! optional `App-Token`), then every request with `Session-Token`; an
//! expired session (401 `ERROR_SESSION_TOKEN_INVALID`) is opened again and
//! the request sent once more; `killSession` at the end.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde_json::Value;

use crate::{GlpiCollectorConfig, GlpiError};

/// Largest GLPI answer read (a page of tasks, an item); a longer one is an
/// error, never held whole.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

pub(crate) struct GlpiClient {
    http: reqwest::Client,
    base: String,
    app_token: Option<String>,
    user_token: String,
    session: Option<String>,
    /// Sessions opened (the first one plus re-inits after expiry).
    pub(crate) session_inits: u32,
    pub(crate) requests: u64,
}

/// One answer, read whole.
pub(crate) struct Answer {
    pub(crate) url: String,
    pub(crate) status: u16,
    /// `Content-Range: start-end/total`.
    pub(crate) content_range: Option<(u64, u64, u64)>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// GLPI's error answers are `["ERROR_CODE", "message"]`.
    pub(crate) fn error_code(&self) -> Option<String> {
        match serde_json::from_slice::<Value>(&self.body).ok()? {
            Value::Array(items) => items.first()?.as_str().map(str::to_string),
            _ => None,
        }
    }

    fn unexpected(&self) -> GlpiError {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(300).collect();
        GlpiError::Status { url: self.url.clone(), status: self.status, body }
    }

    fn json(&self) -> Result<Value, GlpiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| GlpiError::Protocol { url: self.url.clone(), message: format!("the answer is not JSON: {e}") })
    }
}

/// One item lookup.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Found(Value),
    /// 404 `ERROR_ITEM_NOT_FOUND`.
    Missing,
    /// `ERROR_RIGHT_MISSING`: the API user may not read it.
    Forbidden,
}

/// One page of the task list: each task as sent (its bytes) and parsed.
pub(crate) struct TaskPage {
    pub(crate) items: Vec<(Vec<u8>, Value)>,
    /// Total number of tasks, from `Content-Range`.
    pub(crate) total: Option<u64>,
}

fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.trim().split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total.trim().parse().ok()?))
}

impl GlpiClient {
    pub(crate) fn new(config: &GlpiCollectorConfig) -> Result<GlpiClient, GlpiError> {
        let options = collector_runtime::HttpClientOptions {
            timeout: Some(Duration::from_secs(config.request_timeout_seconds)),
            connect_timeout: Duration::from_secs(config.request_timeout_seconds.min(10)),
            user_agent: concat!("meter-collector-glpi/", env!("CARGO_PKG_VERSION")),
        };
        let http = collector_runtime::http_client(&config.tls, &options).map_err(|e| match e {
            collector_runtime::HttpClientError::Build(source) => GlpiError::Http { url: config.url.to_string(), source },
            other => GlpiError::Config { path: "[tls]".into(), message: other.to_string() },
        })?;
        Ok(GlpiClient {
            http,
            base: config.url.as_str().trim_end_matches('/').to_string(),
            app_token: config.app_token.clone().filter(|t| !t.is_empty()),
            user_token: config.user_token.clone(),
            session: None,
            session_inits: 0,
            requests: 0,
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, GlpiError> {
        let text = format!("{}/{}", self.base, path);
        Url::parse_with_params(&text, query)
            .map_err(|e| GlpiError::Protocol { url: text.clone(), message: format!("not a URL: {e}") })
    }

    fn headers(&self, authorization: Option<String>) -> Result<HeaderMap, GlpiError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let value = |v: &str, what: &str| {
            HeaderValue::from_str(v).map_err(|_| GlpiError::Session(format!("the {what} contains characters not allowed in a header")))
        };
        if let Some(app) = &self.app_token {
            headers.insert("App-Token", value(app, "app_token")?);
        }
        if let Some(auth) = authorization {
            headers.insert(AUTHORIZATION, value(&auth, "user_token")?);
        }
        if let Some(session) = &self.session {
            headers.insert("Session-Token", value(session, "session token")?);
        }
        Ok(headers)
    }

    async fn send(&mut self, path: &str, query: &[(&str, String)], authorization: Option<String>) -> Result<Answer, GlpiError> {
        let url = self.url(path, query)?;
        let shown = url.to_string();
        let headers = self.headers(authorization)?;
        self.requests += 1;
        let response = self
            .http
            .get(url)
            .headers(headers)
            .send()
            .await
            .map_err(|source| GlpiError::Http { url: shown.clone(), source })?;
        let status = response.status().as_u16();
        let content_range = response
            .headers()
            .get("Content-Range")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        let body = collector_runtime::read_body_capped(response, MAX_RESPONSE_BYTES).await.map_err(|e| match e {
            collector_runtime::CappedBodyError::Http(source) => GlpiError::Http { url: shown.clone(), source },
            e => GlpiError::Protocol { url: shown.clone(), message: e.to_string() },
        })?;
        Ok(Answer { url: shown, status, content_range, body })
    }

    /// Opens a session (`initSession`).
    pub(crate) async fn init_session(&mut self) -> Result<(), GlpiError> {
        self.session = None;
        let answer = self.send("initSession", &[], Some(format!("user_token {}", self.user_token))).await?;
        if answer.status != 200 {
            let code = answer.error_code().unwrap_or_default();
            return Err(GlpiError::Session(format!(
                "initSession answered {} {code} (check user_token, app_token and the API client's allowed addresses in GLPI): {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).chars().take(300).collect::<String>()
            )));
        }
        let token = answer
            .json()?
            .get("session_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| GlpiError::Protocol { url: answer.url.clone(), message: "no session_token in the answer".into() })?;
        self.session = Some(token);
        self.session_inits += 1;
        Ok(())
    }

    /// GETs `path` in the session, opening it (again, once) if needed.
    async fn get(&mut self, path: &str, query: &[(&str, String)]) -> Result<Answer, GlpiError> {
        if self.session.is_none() {
            self.init_session().await?;
        }
        let answer = self.send(path, query, None).await?;
        let expired = matches!(answer.status, 401 | 400)
            && answer.error_code().as_deref() == Some("ERROR_SESSION_TOKEN_INVALID");
        if !expired {
            return Ok(answer);
        }
        tracing::info!(url = %answer.url, "GLPI session expired; opening a new one");
        self.init_session().await?;
        self.send(path, query, None).await
    }

    /// Tasks `start..=end` in `date_mod` order (`GET TicketTask/`).
    pub(crate) async fn tasks(&mut self, start: u64, end: u64) -> Result<TaskPage, GlpiError> {
        let query = [
            ("range", format!("{start}-{end}")),
            ("sort", "date_mod".to_string()),
            ("order", "ASC".to_string()),
            ("get_hateoas", "false".to_string()),
        ];
        let answer = self.get("TicketTask/", &query).await?;
        match answer.status {
            200 | 206 => {}
            // Asked past the end (tasks were purged since the offset was noted).
            400 if answer.error_code().as_deref() == Some("ERROR_RANGE_EXCEED_TOTAL") => {
                return Ok(TaskPage { items: Vec::new(), total: None })
            }
            _ => return Err(answer.unexpected()),
        }
        let not_a_list = |url: &str| GlpiError::Protocol { url: url.to_string(), message: "expected a JSON array of tasks".into() };
        let items = match answer.body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice::<Vec<Box<serde_json::value::RawValue>>>(&answer.body)
                .map_err(|_| not_a_list(&answer.url))?
                .into_iter()
                .map(|raw| {
                    let value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                    (raw.get().as_bytes().to_vec(), value)
                })
                .collect(),
            // GLPI answers an empty object for an empty list in some versions.
            _ if matches!(answer.json()?, Value::Object(ref map) if map.is_empty()) => Vec::new(),
            _ => return Err(not_a_list(&answer.url)),
        };
        Ok(TaskPage { items, total: answer.content_range.map(|r| r.2) })
    }

    /// One item (`GET itemtype/id`).
    pub(crate) async fn item(&mut self, itemtype: &str, id: u64) -> Result<Item, GlpiError> {
        let answer = self.get(&format!("{itemtype}/{id}"), &[("get_hateoas", "false".to_string())]).await?;
        match answer.status {
            200 => {}
            404 => return Ok(Item::Missing),
            401 | 403 if answer.error_code().as_deref() == Some("ERROR_RIGHT_MISSING") => return Ok(Item::Forbidden),
            _ => return Err(answer.unexpected()),
        }
        match answer.json()? {
            item @ Value::Object(_) => Ok(Item::Found(item)),
            _ => Err(GlpiError::Protocol { url: answer.url, message: format!("expected a JSON object for {itemtype} {id}") }),
        }
    }

    /// Closes the session (`killSession`); failures only logged.
    pub(crate) async fn kill_session(&mut self) {
        if self.session.is_none() {
            return;
        }
        match self.send("killSession", &[], None).await {
            Ok(a) if a.status == 200 => {}
            Ok(a) => tracing::debug!(status = a.status, "killSession refused"),
            Err(e) => tracing::debug!(error = %e, "killSession failed"),
        }
        self.session = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("0-49/1234"), Some((0, 49, 1234)));
        assert_eq!(parse_content_range(" 50 - 99 / 100 "), Some((50, 99, 100)));
        assert_eq!(parse_content_range("bytes 0-1/2"), None);
    }

    #[test]
    fn glpi_error_codes_are_read_from_the_body() {
        let a = Answer {
            url: "u".into(),
            status: 401,
            content_range: None,
            body: br#"["ERROR_SESSION_TOKEN_INVALID","session_token seems invalid"]"#.to_vec(),
        };
        assert_eq!(a.error_code().as_deref(), Some("ERROR_SESSION_TOKEN_INVALID"));
        let b = Answer { url: "u".into(), status: 500, content_range: None, body: b"<html>".to_vec() };
        assert_eq!(b.error_code(), None);
    }
}
