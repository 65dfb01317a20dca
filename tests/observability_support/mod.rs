//! What the observability tests share: a bare HTTP/1.0 client, reading a
//! series from a scrape, headless Chromium's DOM and screenshot of a page,
//! and a WebDriver session to click through pages ([`webdriver`]).

// Not every test file uses every helper.
#![allow(dead_code)]

pub mod webdriver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One HTTP/1.0 exchange: (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
    http_with(addr, method, path, form, &[])
}

/// [`http`] with extra request headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    form: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = form.unwrap_or("");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if form.is_some() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of the series `series` in a scrape (0 if absent).
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Headless Chromium's DOM of `url` after it loaded, and a screenshot of
/// the page saved as `shot`.
pub fn chromium(url: &str, shot: &Path) -> String {
    let run = |extra: &[&str]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1200,1600",
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium (Debian `chromium`; bash integration/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&[&format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    run(&["--dump-dom"])
}

/// `$CARGO_TARGET_TMPDIR/NAME/`, created: where screenshots go for people
/// to look at.
pub fn shots(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads `from` line by line until `want` returns something, then keeps
/// draining it in the background so the process never writes to a closed
/// pipe.
pub fn first_line<T, R: Read + Send + 'static>(
    from: R,
    mut want: impl FnMut(&str) -> Option<T>,
) -> T {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(from).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(found) = want(&line) {
            std::thread::spawn(move || lines.for_each(drop));
            return found;
        }
        seen.push(line);
    }
    panic!(
        "the stream ended before the line looked for:\n{}",
        seen.join("\n")
    );
}
