//! The `[http]` table of `corral server` and `corral up`.

use std::net::SocketAddr;

use serde::Deserialize;

/// Where and what the HTTP side serves. Every field is optional; the
/// default serves pages, `/metrics` and health on the gRPC port.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve the HTTP side on the gRPC port (requests that are not gRPC go
    /// to it). Default true.
    pub on_grpc_port: Option<bool>,
    /// Also serve it on a listener of its own, e.g. `127.0.0.1:9090`
    /// (for a scraper or a proxy that should not reach gRPC). Default none.
    pub listen: Option<SocketAddr>,
    /// The URL people reach the pages at, used in the link every failed
    /// ExecuteResponse carries. Default `http://` and the gRPC port's
    /// address.
    pub external_url: Option<String>,
    /// Serve the pages; false leaves only `/metrics`, `/healthz` and
    /// `/readyz`. Default true.
    pub pages: Option<bool>,
    /// Offer drain, undrain and cancel on the pages (each asks for a
    /// confirmation first, and is put to the admin policy). Default true.
    pub admin: Option<bool>,
    /// Put a link to the action's page in every failed ExecuteResponse's
    /// message, and keep that response in the CAS so the page still shows
    /// it later. Default true.
    pub link_failures: Option<bool>,
    /// Count RPCs, storage and scheduler events for `/metrics`. Default
    /// true; false leaves the metrics layers out of the stack (for
    /// measuring what they cost) and `/metrics` with the process's own
    /// series and the worker's.
    pub metrics: Option<bool>,
}

impl HttpConfig {
    /// See the field.
    pub fn on_grpc_port(&self) -> bool {
        self.on_grpc_port.unwrap_or(true)
    }

    /// See the field.
    pub fn pages(&self) -> bool {
        self.pages.unwrap_or(true)
    }

    /// See the field.
    pub fn admin(&self) -> bool {
        self.admin.unwrap_or(true)
    }

    /// See the field.
    pub fn metrics(&self) -> bool {
        self.metrics.unwrap_or(true)
    }

    /// See the field.
    pub fn link_failures(&self) -> bool {
        self.link_failures.unwrap_or(true)
    }

    /// The pages' external URL for a gRPC port bound at `addr`.
    pub fn external_url(&self, addr: SocketAddr) -> String {
        self.external_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let c: HttpConfig = toml::from_str("").unwrap();
        assert!(c.on_grpc_port() && c.pages() && c.admin() && c.link_failures());
        let addr: SocketAddr = "127.0.0.1:8980".parse().unwrap();
        assert_eq!(c.external_url(addr), "http://127.0.0.1:8980");
        let c: HttpConfig =
            toml::from_str("external_url = \"https://farm.example/\"\nadmin = false").unwrap();
        assert_eq!(c.external_url(addr), "https://farm.example");
        assert!(!c.admin());
        let e = toml::from_str::<HttpConfig>("page = false").unwrap_err();
        assert!(e.to_string().contains("page"), "{e}");
    }
}
