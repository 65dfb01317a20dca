//! Downloads for FetchBlob misses, by policy.
//!
//! The [`Fetcher`] owns an HTTP client (reqwest, rustls, no proxy, no
//! cookies) whose redirect policy checks every target against the
//! [`DownloadPolicy`] and counts them. A download is spooled to a file
//! under the server's data directory while the CAS digest and, when the
//! request carries `checksum.sri`, that checksum are computed; it is
//! stopped as soon as it passes the size limit (at once when the server
//! announces a larger `Content-Length`), and the whole of it — redirects
//! included — is bounded by the time limit. Only a download that completed
//! and matched its checksum is handed back; the caller stores it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_cas::{Digest, DigestFunction};
use tokio::io::AsyncWriteExt;

use crate::policy::DownloadPolicy;
use crate::qualifiers::sri::render;
use crate::qualifiers::Integrity;

/// Why a download failed. Each names the URI; [`DownloadError::code`] is
/// the status the Fetch service answers with.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The policy does not allow the URL.
    #[error("{uri}: not downloaded: {reason}")]
    Denied {
        /// The URL.
        uri: String,
        /// Which rule refused it.
        reason: String,
    },
    /// A redirect led somewhere the policy does not allow (or too far).
    #[error("{uri}: redirect refused: {reason}")]
    Redirect {
        /// The URL first asked for.
        uri: String,
        /// Where it led and why that was refused.
        reason: String,
    },
    /// The origin answered with an HTTP error.
    #[error("{uri}: the server answered HTTP {status}")]
    Http {
        /// The URL.
        uri: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The content is larger than `max_bytes`.
    #[error("{uri}: the download is larger than the limit of {limit} bytes ([asset.download] max_bytes){}", .announced.map(|n| format!("; the server announced {n} bytes")).unwrap_or_default())]
    TooLarge {
        /// The URL.
        uri: String,
        /// The limit.
        limit: u64,
        /// The `Content-Length`, if the server sent one.
        announced: Option<u64>,
    },
    /// The download took longer than allowed.
    #[error("{uri}: the download did not finish within {after:?}")]
    Timeout {
        /// The URL.
        uri: String,
        /// The limit that applied.
        after: Duration,
    },
    /// The bytes do not match `checksum.sri`; nothing was stored.
    #[error("{uri}: the downloaded content does not match checksum.sri: expected {expected}, got {actual}; nothing was stored")]
    ChecksumMismatch {
        /// The URL.
        uri: String,
        /// What `checksum.sri` said.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The connection failed (refused, reset, DNS, TLS).
    #[error("{uri}: {message}")]
    Transport {
        /// The URL.
        uri: String,
        /// What happened.
        message: String,
    },
    /// Spooling the download to local disk failed: the server's fault.
    #[error("{uri}: spooling the download to {path}: {source}")]
    Local {
        /// The URL.
        uri: String,
        /// The spool path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl DownloadError {
    /// The status code for this failure, as the Remote Asset API lists
    /// them for fetches from origin.
    pub fn code(&self) -> tonic::Code {
        match self {
            DownloadError::Denied { .. } | DownloadError::Redirect { .. } => {
                tonic::Code::PermissionDenied
            }
            DownloadError::Http { status, .. } => match status {
                404 | 410 => tonic::Code::NotFound,
                401 | 403 => tonic::Code::PermissionDenied,
                429 => tonic::Code::ResourceExhausted,
                _ => tonic::Code::Unavailable,
            },
            DownloadError::TooLarge { .. } => tonic::Code::ResourceExhausted,
            DownloadError::Timeout { .. } => tonic::Code::DeadlineExceeded,
            DownloadError::ChecksumMismatch { .. } => tonic::Code::Aborted,
            DownloadError::Transport { .. } => tonic::Code::Unavailable,
            DownloadError::Local { .. } => tonic::Code::Internal,
        }
    }
}

/// A completed, verified download, spooled to a temporary file (removed
/// when this is dropped).
pub struct Downloaded {
    /// The spooled content.
    pub file: tempfile::TempPath,
    /// Its CAS digest under the request's digest function.
    pub digest: Digest,
}

/// Why the redirect policy stopped a redirect (found again in reqwest's
/// error chain).
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// The network fetcher.
pub struct Fetcher {
    client: reqwest::Client,
    policy: Arc<DownloadPolicy>,
    spool: PathBuf,
}

impl Fetcher {
    /// A fetcher that spools under `spool` (created, and emptied of what
    /// an earlier run left). Blocking.
    pub fn new(policy: DownloadPolicy, spool: &Path) -> crate::error::Result<Fetcher> {
        use crate::error::AssetError;
        if spool.exists() {
            std::fs::remove_dir_all(spool)
                .map_err(|e| AssetError::io(format!("clearing {}", spool.display()), e))?;
        }
        std::fs::create_dir_all(spool)
            .map_err(|e| AssetError::io(format!("creating {}", spool.display()), e))?;
        let policy = Arc::new(policy);
        let checked = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let target = attempt.url().to_string();
            if attempt.previous().len() > checked.max_redirects as usize {
                let n = checked.max_redirects;
                return attempt.error(RedirectRefused(format!(
                    "more than {n} redirects ([asset.download] max_redirects), the last to {target}"
                )));
            }
            match checked.check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(reason) => attempt.error(RedirectRefused(format!("to {target}: {reason}"))),
            }
        });
        let client = reqwest::Client::builder()
            .redirect(redirects)
            .no_proxy()
            .user_agent(concat!("corral-asset/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AssetError::Internal(format!("building the HTTP client: {e}")))?;
        Ok(Fetcher {
            client,
            policy,
            spool: spool.to_path_buf(),
        })
    }

    /// The policy it follows.
    pub fn policy(&self) -> &DownloadPolicy {
        &self.policy
    }

    /// Downloads `url` within the policy's limits (and `timeout`, if it is
    /// shorter), checking `integrity` when given.
    pub async fn download(
        &self,
        url: &url::Url,
        function: DigestFunction,
        integrity: Option<&Integrity>,
        timeout: Option<Duration>,
    ) -> Result<Downloaded, DownloadError> {
        let uri = url.to_string();
        self.policy
            .check(url)
            .map_err(|reason| DownloadError::Denied {
                uri: uri.clone(),
                reason,
            })?;
        let limit = timeout.map_or(self.policy.timeout, |t| t.min(self.policy.timeout));
        match tokio::time::timeout(limit, self.transfer(url, function, integrity)).await {
            Ok(result) => result,
            Err(_) => Err(DownloadError::Timeout { uri, after: limit }),
        }
    }

    async fn transfer(
        &self,
        url: &url::Url,
        function: DigestFunction,
        integrity: Option<&Integrity>,
    ) -> Result<Downloaded, DownloadError> {
        let uri = url.to_string();
        let mut response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| transport_error(&uri, &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(DownloadError::Http {
                uri,
                status: status.as_u16(),
            });
        }
        let max = self.policy.max_bytes;
        if let Some(announced) = response.content_length().filter(|n| *n > max) {
            return Err(DownloadError::TooLarge {
                uri,
                limit: max,
                announced: Some(announced),
            });
        }
        let local = |source: std::io::Error, path: &Path| DownloadError::Local {
            uri: uri.clone(),
            path: path.display().to_string(),
            source,
        };
        let spooled =
            tempfile::NamedTempFile::new_in(&self.spool).map_err(|e| local(e, &self.spool))?;
        let (file, path) = spooled.into_parts();
        let mut out = tokio::fs::File::from_std(file);
        let mut hasher = function.hasher();
        let mut sri = integrity.map(Integrity::hasher);
        let mut total: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(&uri, &e))?
        {
            total += chunk.len() as u64;
            if total > max {
                return Err(DownloadError::TooLarge {
                    uri,
                    limit: max,
                    announced: None,
                });
            }
            hasher.update(&chunk);
            if let Some(h) = sri.as_mut() {
                h.update(&chunk);
            }
            out.write_all(&chunk).await.map_err(|e| local(e, &path))?;
        }
        out.flush().await.map_err(|e| local(e, &path))?;
        if let (Some(integrity), Some(h)) = (integrity, sri) {
            let actual = h.finish();
            if !integrity.matches(&actual) {
                return Err(DownloadError::ChecksumMismatch {
                    uri,
                    expected: integrity.expected(),
                    actual: render(integrity.algorithm(), &actual),
                });
            }
        }
        Ok(Downloaded {
            file: path,
            digest: hasher.finish(),
        })
    }
}

/// A reqwest error as a download failure; a redirect our policy refused
/// is told apart from other transport errors.
fn transport_error(uri: &str, e: &reqwest::Error) -> DownloadError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<RedirectRefused>() {
            return DownloadError::Redirect {
                uri: uri.to_string(),
                reason: refused.0.clone(),
            };
        }
        source = err.source();
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        message.push_str(&format!(": {err}"));
        source = err.source();
    }
    DownloadError::Transport {
        uri: uri.to_string(),
        message,
    }
}
