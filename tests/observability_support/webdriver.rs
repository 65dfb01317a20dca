//! A headless Chromium driven through chromedriver (Debian's
//! `chromium-driver`) over the W3C WebDriver protocol, for tests that
//! click: open a page, click a button (a form submission, navigation
//! included), read an element's text, take a screenshot. Plain HTTP/1.1 to
//! chromedriver on a loopback port and `serde_json`, nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it; both end on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless
    /// Chromium session (no sandbox: the tests run as root).
    pub fn start() -> anyhow::Result<Browser> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("chromedriver (Debian `chromium-driver`; integration/install-deps.sh)")?;
        let profile = tempfile::tempdir()?;
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while browser.call("GET", "/status", None).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1600",
                         format!("--user-data-dir={}", browser._profile.path().display())],
            },
        }}});
        let answer = browser.call("POST", "/session", Some(capabilities))?;
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in {answer}"))?
            .to_string();
        // A click that submits a form returns before the next page is
        // there: finding an element waits up to 15 s for it.
        browser.session_call("POST", "/timeouts", Some(json!({"implicit": 15000})))?;
        Ok(browser)
    }

    /// Navigates to `url` and waits for it to load.
    pub fn open(&self, url: &str) -> anyhow::Result<()> {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The current page's URL.
    pub fn url(&self) -> anyhow::Result<String> {
        let v = self.session_call("GET", "/url", None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Waits up to 30 s for the browser to be at `url` (a form's POST and
    /// its redirect may still be under way when a click returns).
    pub fn wait_for_url(&self, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.url()?;
            if now == url {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the browser is at {now}, not {url}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> anyhow::Result<String> {
        let id = self.find(css)?;
        let v = self.session_call("GET", &format!("/element/{id}/text"), None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Clicks the first element matching `css` (and waits for the page a
    /// form submission loads).
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.find(css)?;
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .map(drop)
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let v = self.session_call("GET", "/screenshot", None)?;
        base64_decode(v.as_str().context("no screenshot data")?)
    }

    fn find(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .session_call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .with_context(|| format!("finding {css:?}"))?;
        Ok(v[ELEMENT]
            .as_str()
            .with_context(|| format!("no element reference in {v}"))?
            .to_string())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let v = self.call(method, &format!("/session/{}{path}", self.session), body)?;
        Ok(v["value"].clone())
    }

    /// One WebDriver command; an error carries the driver's.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(request.as_bytes())?;
        // chromedriver may keep the connection open whatever the request
        // says: read the head, then exactly the body it announces.
        let (head, body) = read_response(&mut s)?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head}"))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("chromedriver answered {text}"))?;
        if status != 200 {
            bail!("{method} {path}: {status} {}", value["value"]);
        }
        Ok(value)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` (what chromedriver
/// sends): its head and its body.
fn read_response(s: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("chromedriver closed the connection mid-answer");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .with_context(|| format!("no Content-Length in {head}"))?;
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("chromedriver closed the connection mid-body");
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    Ok((head, body))
}

/// Standard base64 (what WebDriver's screenshot is), padding optional.
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {:?}", c as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
