//! A minimal blocking HTTP/1.1 client for the CLI subcommands: one request
//! per connection (`Connection: close`), body read to EOF, plain TCP to a
//! loopback (or explicitly given) API address. Enough for our own API; not
//! a general client (no TLS, no redirects, no chunked encoding).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Deadline of connect, each read and each write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted.
const MAX_RESPONSE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the control API at {addr} (is filesyncd running?)")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control API at {addr}: I/O failed")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control API at {addr}: malformed response")]
    Malformed { addr: String },
    #[error("control API answered {status}: {message}")]
    Status { status: u16, message: String },
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// Sends one request to `addr` (`HOST:PORT`).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<HttpResponse, ClientError> {
    request_with(addr, method, path, body, token, Some(IO_TIMEOUT))
}

/// [`request`] with another read deadline (`None`: wait as long as the
/// daemon works, for long operations such as `verify`).
pub fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    read_timeout: Option<Duration>,
) -> Result<HttpResponse, ClientError> {
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    let connect = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(std::io::Error::other("no address")))?;
    let mut stream = TcpStream::connect_timeout(&sock, IO_TIMEOUT).map_err(connect)?;
    stream.set_read_timeout(read_timeout).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(io)?;
    parse_response(&raw).ok_or(ClientError::Malformed {
        addr: addr.to_string(),
    })
}

/// Parses a `Connection: close` response (status line, headers, body).
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let chunked = lines
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    if chunked {
        return None;
    }
    Some(HttpResponse {
        status,
        body: body.to_string(),
    })
}

/// GET/POST and turn a non-2xx answer into [`ClientError::Status`] with the
/// API's error message.
pub fn call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<String, ClientError> {
    call_with(addr, method, path, body, token, Some(IO_TIMEOUT))
}

/// [`call`] with another read deadline (see [`request_with`]).
pub fn call_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    read_timeout: Option<Duration>,
) -> Result<String, ClientError> {
    let r = request_with(addr, method, path, body, token, read_timeout)?;
    if (200..300).contains(&r.status) {
        return Ok(r.body);
    }
    let message = serde_json::from_str::<super::types::ApiErrorBody>(&r.body)
        .map(|e| e.error)
        .unwrap_or_else(|_| r.body.trim().to_string());
    Err(ClientError::Status {
        status: r.status,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        let r = parse_response(b"HTTP/1.1 401 Unauthorized\r\n\r\n{}").unwrap();
        assert_eq!(r.status, 401);
        assert!(parse_response(b"garbage").is_none());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc")
                .is_none()
        );
    }
}
