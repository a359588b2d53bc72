//! The CLI's blocking client of the control API: one request per
//! connection over plain TCP to the API address, on hyper's HTTP/1
//! connection API (the same hyper that serves the API), driven by a
//! current-thread runtime of its own. Bounded: connect and write deadlines,
//! an optional read deadline, and a cap on the response body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Deadline of connect and of sending the request; the default deadline of
/// the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted.
const MAX_RESPONSE: usize = 16 << 20;

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
    #[error("control API at {addr}: {detail}")]
    Malformed { addr: String, detail: String },
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

/// [`request`] with another deadline for the answer (`None`: wait as long
/// as the daemon works, for long operations such as `verify`).
pub fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    read_timeout: Option<Duration>,
) -> Result<HttpResponse, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ClientError::Io {
            addr: addr.to_string(),
            source,
        })?;
    rt.block_on(send(addr, method, path, body, token, read_timeout))
}

/// Connects, sends the request and returns the answer's head with its
/// body unread, and the task driving the connection (abort it when done).
async fn open(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<
    (
        hyper::Response<hyper::body::Incoming>,
        tokio::task::JoinHandle<()>,
    ),
    ClientError,
> {
    use tokio::time::timeout;
    let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
    let connect = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    let stream = timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| connect(timed_out()))?
        .map_err(connect)?;
    let (mut sender, conn) = timeout(
        IO_TIMEOUT,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| io(timed_out()))?
    .map_err(|e| io(std::io::Error::other(e)))?;
    // The connection is driven beside the request on this runtime.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr)
        .header(CONNECTION, "close");
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    if method != "GET" {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .map_err(|e| ClientError::Malformed {
            addr: addr.to_string(),
            detail: format!("bad request: {e}"),
        })?;
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, driver)),
        Err(e) => {
            driver.abort();
            Err(io(std::io::Error::other(e)))
        }
    }
}

async fn read_all(addr: &str, body: hyper::body::Incoming) -> Result<String, ClientError> {
    let malformed = |detail: String| ClientError::Malformed {
        addr: addr.to_string(),
        detail,
    };
    let bytes = Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| malformed(format!("response body: {e}")))?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("response body is not UTF-8".into()))
}

async fn send(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    read_timeout: Option<Duration>,
) -> Result<HttpResponse, ClientError> {
    let answer = async {
        let (resp, driver) = open(addr, method, path, body, token).await?;
        let status = resp.status().as_u16();
        let body = read_all(addr, resp.into_body()).await;
        driver.abort();
        Ok(HttpResponse {
            status,
            body: body?,
        })
    };
    match read_timeout {
        Some(d) => tokio::time::timeout(d, answer)
            .await
            .map_err(|_| ClientError::Io {
                addr: addr.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            })?,
        None => answer.await,
    }
}

/// POSTs `body` and hands each line of a 2xx answer to `on_line` as it
/// arrives (newline-delimited JSON, e.g. `/restore/tree`), with no read
/// deadline; a line is at most the response cap. A non-2xx answer is
/// [`ClientError::Status`], as with [`call`].
pub fn call_lines(
    addr: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ClientError::Io {
            addr: addr.to_string(),
            source,
        })?;
    rt.block_on(async {
        let (resp, driver) = open(addr, "POST", path, Some(body), token).await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = read_all(addr, resp.into_body()).await;
            driver.abort();
            return Err(status_error(status, &body?));
        }
        let malformed = |detail: String| ClientError::Malformed {
            addr: addr.to_string(),
            detail,
        };
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let res = loop {
            let Some(frame) = body.frame().await else {
                break Ok(());
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => break Err(malformed(format!("response body: {e}"))),
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                match std::str::from_utf8(&line[..i]) {
                    Ok(l) if !l.trim().is_empty() => on_line(l),
                    Ok(_) => {}
                    Err(_) => return Err(malformed("response line is not UTF-8".into())),
                }
            }
            if buf.len() > MAX_RESPONSE {
                break Err(malformed("response line too long".into()));
            }
        };
        driver.abort();
        res?;
        match std::str::from_utf8(&buf) {
            Ok(l) if !l.trim().is_empty() => on_line(l),
            Ok(_) => {}
            Err(_) => return Err(malformed("response line is not UTF-8".into())),
        }
        Ok(())
    })
}

fn status_error(status: u16, body: &str) -> ClientError {
    let message = serde_json::from_str::<super::types::ApiErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.trim().to_string());
    ClientError::Status { status, message }
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

/// [`call`] with another deadline for the answer (see [`request_with`]).
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
    Err(status_error(r.status, &r.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot server answering `raw` to the first request; returns its
    /// address and what it received.
    fn serve_once(raw: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).unwrap();
            s.write_all(raw).unwrap();
            String::from_utf8_lossy(&got[..n]).into_owned()
        });
        (addr, h)
    }

    #[test]
    fn answers_plain_and_chunked_with_the_secret_sent() {
        let (addr, h) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        let r = request(&addr, "GET", "/status", None, Some("s3")).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        let sent = h.join().unwrap().to_ascii_lowercase();
        assert!(sent.starts_with("get /status http/1.1\r\n"), "{sent}");
        assert!(sent.contains("authorization: bearer s3"), "{sent}");
        assert!(sent.contains(&format!("host: {addr}")), "{sent}");

        let (addr, _h) = serve_once(
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n\
              11\r\n{\"error\":\"nope\"}\n\r\n0\r\n\r\n",
        );
        match call(&addr, "GET", "/x", None, None) {
            Err(ClientError::Status { status, message }) => {
                assert_eq!((status, message.as_str()), (401, "nope"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_arrive_one_by_one() {
        let (addr, _h) = serve_once(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              6\r\n{\"a\":1\r\n8\r\n}\n{\"b\":2\r\n2\r\n}\n\r\n0\r\n\r\n",
        );
        let mut got = Vec::new();
        call_lines(&addr, "/x", "{}", None, &mut |l| got.push(l.to_string())).unwrap();
        assert_eq!(got, vec!["{\"a\":1}", "{\"b\":2}"]);
        let (addr, _h) =
            serve_once(b"HTTP/1.1 409 Conflict\r\ncontent-length: 16\r\n\r\n{\"error\":\"busy\"}");
        match call_lines(&addr, "/x", "{}", None, &mut |_| {}) {
            Err(ClientError::Status { status, message }) => {
                assert_eq!((status, message.as_str()), (409, "busy"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_silence_are_errors() {
        let (addr, _h) = serve_once(b"garbage\r\n\r\n");
        assert!(request(&addr, "GET", "/", None, None).is_err());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let r = request_with(
            &addr,
            "GET",
            "/",
            None,
            None,
            Some(Duration::from_millis(200)),
        );
        assert!(matches!(r, Err(ClientError::Io { .. })), "{r:?}");
        drop(l);
        let r = request(&addr, "GET", "/", None, None);
        assert!(matches!(r, Err(ClientError::Connect { .. })), "{r:?}");
    }
}
