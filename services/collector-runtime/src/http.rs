//! HTTP clients of collected systems (one builder, one TLS setting) and
//! their answers, read with a size cap.

use std::time::Duration;

use meter_config::TlsConfig;

/// Why an HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile { path: String, source: std::io::Error },
    #[error("the CA file {path} is not a PEM certificate: {source}")]
    CaPem { path: String, source: reqwest::Error },
    #[error("HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// What differs between the collectors' clients besides TLS.
#[derive(Debug, Clone)]
pub struct HttpClientOptions {
    /// Whole-request timeout; `None` for streams (the Icinga event stream).
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub user_agent: &'static str,
}

impl Default for HttpClientOptions {
    fn default() -> Self {
        HttpClientOptions {
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("meter-collector/", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The HTTP client every collector uses: rustls with the system roots, plus
/// the configured CA, hostname check and (for local tests only) no check.
pub fn http_client(tls: &TlsConfig, options: &HttpClientOptions) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(options.user_agent);
    if let Some(timeout) = options.timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(path) = &tls.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| HttpClientError::CaFile { path: shown.clone(), source })?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|source| HttpClientError::CaPem { path: shown, source })?;
        builder = builder.add_root_certificate(ca);
    }
    if !tls.verify_hostname {
        builder = builder.danger_accept_invalid_hostnames(true);
    }
    if tls.insecure_skip_verify {
        tracing::warn!("tls.insecure_skip_verify = true: server certificates are NOT verified (local testing only)");
        builder = builder.danger_accept_invalid_certs(true);
    }
    Ok(builder.build()?)
}

/// Why an HTTP answer was not read.
#[derive(Debug, thiserror::Error)]
pub enum CappedBodyError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the answer is larger than {max} bytes: refused (never read whole)")]
    TooLarge { max: usize },
}

/// Reads an HTTP answer of a collected system (GLPI, a VM metrics endpoint)
/// up to `max` bytes: a declared or actual longer body is refused as soon as
/// it passes the limit, so a broken or hostile server cannot exhaust memory.
pub async fn read_body_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, CappedBodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(CappedBodyError::TooLarge { max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(CappedBodyError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn a_missing_or_broken_ca_file_is_named_in_the_error() {
        let missing = TlsConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsConfig::default() };
        let err = http_client(&missing, &HttpClientOptions::default()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let broken = TlsConfig { ca_file: Some(junk.clone()), ..TlsConfig::default() };
        match http_client(&broken, &HttpClientOptions::default()) {
            Err(HttpClientError::CaPem { path, .. }) => assert_eq!(path, junk.display().to_string()),
            // rustls accepts a PEM without certificates and adds nothing: then the client builds.
            Ok(_) => {}
            Err(other) => panic!("{other}"),
        }
        assert!(http_client(&TlsConfig::default(), &HttpClientOptions { timeout: None, ..HttpClientOptions::default() }).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one HTTP answer with a body of `size` bytes, chunked (no length) or not.
    async fn serve_once(size: usize, chunked: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let chunk = vec![b'x'; 4096];
            if chunked {
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let mut left = size;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if socket.write_all(format!("{n:x}\r\n").as_bytes()).await.is_err()
                        || socket.write_all(&chunk[..n]).await.is_err()
                        || socket.write_all(b"\r\n").await.is_err()
                    {
                        return;
                    }
                    left -= n;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            } else {
                let _ = socket.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").as_bytes()).await;
                let _ = socket.write_all(&vec![b'x'; size]).await;
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn http_answers_are_read_up_to_the_cap_only() {
        let client = reqwest::Client::new();
        for chunked in [false, true] {
            let url = serve_once(10_000, chunked).await;
            let body = read_body_capped(client.get(&url).send().await.unwrap(), 10_000).await.unwrap();
            assert_eq!(body.len(), 10_000);
            let url = serve_once(10_000_000, chunked).await;
            let err = read_body_capped(client.get(&url).send().await.unwrap(), 100_000).await.unwrap_err();
            assert!(matches!(err, CappedBodyError::TooLarge { max: 100_000 }), "chunked {chunked}: {err}");
        }
    }
}
