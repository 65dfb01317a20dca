//! The download policy: which URLs the server may fetch itself, and the
//! limits of one download.
//!
//! A URL is allowed when its scheme is `http` or `https` and its host
//! matches an `allowed_hosts` entry or the URL starts with an
//! `allowed_url_prefixes` entry. Every redirect target is checked again
//! ([`crate::fetcher`]), so an allowed host cannot bounce the server to
//! one that is not.

use std::time::Duration;

use url::Url;

use crate::config::DownloadConfig;
use crate::error::{AssetError, Result};

/// One `allowed_hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostRule {
    /// Lower-case host, IPv6 in brackets; for a wildcard, the suffix with
    /// its leading dot (`.example.com`).
    host: String,
    wildcard: bool,
    /// Only this port, if given.
    port: Option<u16>,
}

impl HostRule {
    fn parse(entry: &str) -> std::result::Result<HostRule, String> {
        let entry = entry.trim().to_ascii_lowercase();
        let (wildcard, rest) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, entry.clone()),
        };
        let (host, port) = split_port(&rest)?;
        if host.is_empty() || host.contains(['/', '@', '?', '#', '*', ' ']) {
            return Err(format!(
                "{entry:?} is not a host, host:port or *.domain entry"
            ));
        }
        let host = if wildcard { format!(".{host}") } else { host };
        Ok(HostRule {
            host,
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let host_ok = if self.wildcard {
            host.ends_with(&self.host)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| Some(p) == port)
    }
}

/// `host` or `host:port`, with IPv6 addresses in brackets.
fn split_port(text: &str) -> std::result::Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: unclosed [ of an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{text:?}: expected :PORT after ]"))?,
            ),
        };
        (format!("[{inside}]"), port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("{text:?}: {p:?} is not a port number"))
        })
        .transpose()?;
    Ok((host, port))
}

/// The policy and limits, from `[asset.download]`.
#[derive(Clone, Debug)]
pub struct DownloadPolicy {
    hosts: Vec<HostRule>,
    prefixes: Vec<String>,
    /// Largest download in bytes.
    pub max_bytes: u64,
    /// Longest download.
    pub timeout: Duration,
    /// Redirects followed.
    pub max_redirects: u32,
}

impl DownloadPolicy {
    /// Checks and compiles `[asset.download]`; an entry that does not
    /// parse is an error naming it.
    pub fn from_config(config: &DownloadConfig) -> Result<DownloadPolicy> {
        let hosts = config
            .allowed_hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                HostRule::parse(h).map_err(|r| {
                    AssetError::invalid(format!("asset.download.allowed_hosts[{i}]"), r)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let prefixes = config
            .allowed_url_prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let field = format!("asset.download.allowed_url_prefixes[{i}]");
                let url = Url::parse(p)
                    .map_err(|e| AssetError::invalid(&field, format!("{p:?}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(AssetError::invalid(
                        field,
                        format!("{p:?} is not an http:// or https:// URL"),
                    ));
                }
                Ok(url.to_string())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DownloadPolicy {
            hosts,
            prefixes,
            max_bytes: config.max_bytes,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            max_redirects: config.max_redirects,
        })
    }

    /// Whether the policy allows anything.
    pub fn enabled(&self) -> bool {
        !self.hosts.is_empty() || !self.prefixes.is_empty()
    }

    /// `Ok` if `url` may be downloaded; otherwise why not.
    pub fn check(&self, url: &Url) -> std::result::Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "only http and https URLs are downloaded, not {}:",
                url.scheme()
            ));
        }
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let port = url.port_or_known_default();
        if self.hosts.iter().any(|rule| rule.matches(&host, port)) {
            return Ok(());
        }
        if self
            .prefixes
            .iter()
            .any(|p| url.as_str().starts_with(p.as_str()))
        {
            return Ok(());
        }
        Err(format!(
            "host {host}{} is not allowed by [asset.download] allowed_hosts or allowed_url_prefixes",
            port.map(|p| format!(":{p}")).unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], prefixes: &[&str]) -> DownloadPolicy {
        DownloadPolicy::from_config(&DownloadConfig {
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            allowed_url_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    fn allowed(p: &DownloadPolicy, url: &str) -> bool {
        p.check(&Url::parse(url).unwrap()).is_ok()
    }

    #[test]
    fn hosts_ports_wildcards_and_prefixes() {
        let p = policy(
            &["Example.com", "127.0.0.1:8080", "*.mirror.org", "[::1]"],
            &["https://files.example.net/pub"],
        );
        assert!(allowed(&p, "https://example.com/a"));
        assert!(allowed(&p, "http://EXAMPLE.com:9/a"));
        assert!(!allowed(&p, "https://example.com.evil.org/a"));
        assert!(!allowed(&p, "https://sub.example.com/a"));
        assert!(allowed(&p, "http://127.0.0.1:8080/x"));
        assert!(!allowed(&p, "http://127.0.0.1:8081/x"));
        assert!(!allowed(&p, "http://127.0.0.1/x"));
        assert!(allowed(&p, "https://eu.mirror.org/x"));
        assert!(!allowed(&p, "https://mirror.org/x"));
        assert!(allowed(&p, "http://[::1]:3000/x"));
        assert!(allowed(&p, "https://files.example.net/pub/a.tar"));
        assert!(!allowed(&p, "https://files.example.net/private/a.tar"));
        assert!(!allowed(&p, "ftp://example.com/a"));
        assert!(!allowed(&p, "file:///etc/passwd"));
        // A prefix without a path is normalised to end in '/', so it does
        // not allow a longer host name.
        let p = policy(&[], &["https://files.example.net"]);
        assert!(!allowed(&p, "https://files.example.net.evil.org/x"));
        assert!(allowed(&p, "https://files.example.net/x"));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = DownloadPolicy::from_config(&DownloadConfig {
            allowed_hosts: vec!["ok.com".into(), "bad.com:http".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("asset.download.allowed_hosts[1]"),
            "{err}"
        );
        let err = DownloadPolicy::from_config(&DownloadConfig {
            allowed_url_prefixes: vec!["ftp://x/".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("allowed_url_prefixes[0]"), "{err}");
        assert!(!policy(&[], &[]).enabled());
    }
}
