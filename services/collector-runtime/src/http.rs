//! HTTP answers of collected systems, read with a size cap.

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
