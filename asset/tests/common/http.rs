//! A tiny HTTP/1.1 origin on a loopback address for download tests: each
//! path answers with a body, a redirect, a status, a slow body or an
//! endless one, and every request is counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Route {
    /// 200 with this body and its Content-Length.
    Body(Vec<u8>),
    /// 200 with this body and no Content-Length (the connection closes
    /// at its end).
    Unannounced(Vec<u8>),
    /// 302 to this location.
    Redirect(String),
    /// This status with an empty body.
    Status(u16),
    /// 200 with a Content-Length, the body only after this delay.
    Slow(Duration, Vec<u8>),
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

pub struct Origin {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// An origin on `ip` (e.g. "127.0.0.1") and a free port.
    pub async fn start(ip: &str) -> Origin {
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Origin { addr, shared, task }
    }

    /// Sets what `path` answers.
    pub fn route(&self, path: &str, route: Route) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), route);
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.shared
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests for any path so far.
    pub fn total_hits(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    shared.total.fetch_add(1, Ordering::SeqCst);
    *shared.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let route = shared.routes.lock().unwrap().get(&path).cloned();
    let _ = match route {
        Some(Route::Body(body)) => respond(&mut stream, "200 OK", &[], Some(&body), true).await,
        Some(Route::Unannounced(body)) => {
            respond(&mut stream, "200 OK", &[], Some(&body), false).await
        }
        Some(Route::Redirect(to)) => {
            respond(
                &mut stream,
                "302 Found",
                &[("Location", &to)],
                Some(b""),
                true,
            )
            .await
        }
        Some(Route::Status(code)) => {
            respond(&mut stream, &format!("{code} Status"), &[], Some(b""), true).await
        }
        Some(Route::Slow(delay, body)) => {
            let headers = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(headers.as_bytes()).await;
            tokio::time::sleep(delay).await;
            stream.write_all(&body).await
        }
        None => respond(&mut stream, "404 Not Found", &[], Some(b""), true).await,
    };
    let _ = stream.shutdown().await;
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    announce: bool,
) -> std::io::Result<()> {
    let body = body.unwrap_or(b"");
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if announce {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await
}
