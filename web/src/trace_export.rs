//! Optional OpenTelemetry trace export: the `[tracing]` table, and the
//! OTLP/gRPC exporter behind a `tracing` layer.
//!
//! Off by default. With `otlp_endpoint` set, the server makes one span per
//! gRPC call (named `Service/Method`, with the OpenTelemetry RPC
//! attributes and the call's gRPC code; see [`crate::rpc`]) and whatever
//! `tracing` spans at `info` or above run inside it, and this module
//! sends them in batches to an OTLP collector over gRPC (the
//! `opentelemetry-otlp` tonic exporter). The spans are batched by the SDK
//! on a thread of its own, so a slow or absent collector never delays a
//! call: spans it cannot take are dropped after the export timeout, and the
//! SDK logs the failure.
//!
//! The exporter's tonic channel runs on the tokio runtime it was built in,
//! so [`TraceExport::start`] must be called inside the server's runtime.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;

/// How long one export may take before its spans are given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[tracing]` table of `corral server` and `corral up`. Every field is
/// optional; without `otlp_endpoint` nothing is exported and no span is
/// made per call.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector to send spans to, e.g.
    /// `http://127.0.0.1:4317`. Default none: no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of every span. Default
    /// `corral`.
    pub service_name: Option<String>,
}

impl TracingConfig {
    /// See the field.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or("corral")
    }
}

/// Why the export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceExportError {
    /// The endpoint is not a URL the exporter takes.
    #[error("[tracing] otlp_endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// A running export: the SDK's tracer provider and its batching thread.
/// Dropping it (or [`TraceExport::shutdown`]) flushes what is batched.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl TraceExport {
    /// Starts exporting to `config.otlp_endpoint`, or `None` when it is not
    /// set. Call inside a tokio runtime.
    pub fn start(config: &TracingConfig) -> Result<Option<TraceExport>, TraceExportError> {
        let Some(endpoint) = config.otlp_endpoint.clone() else {
            return Ok(None);
        };
        let bad = |reason: String| TraceExportError::Endpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        let uri: http::Uri = endpoint.parse().map_err(|e| bad(format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT".into()));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(config.service_name().to_string())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        tracing::info!(%endpoint, "exporting traces over OTLP/gRPC");
        Ok(Some(TraceExport { provider, endpoint }))
    }

    /// The `tracing` layer that hands spans to this export.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("corral"))
    }

    /// Flushes the batched spans and stops the export. Blocks until the
    /// last batch is sent (or timed out): call it off the runtime's
    /// worker threads (`spawn_blocking`).
    pub fn shutdown(self) {
        // Drop does it.
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(endpoint = %self.endpoint, error = %e, "flushing the last spans");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_bad_endpoints_are_named() {
        let c: TracingConfig = toml::from_str("").unwrap();
        assert_eq!(c.otlp_endpoint, None);
        assert_eq!(c.service_name(), "corral");
        assert!(TraceExport::start(&c).unwrap().is_none());
        let e = toml::from_str::<TracingConfig>("endpoint = \"x\"").unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        let c: TracingConfig = toml::from_str("otlp_endpoint = \"127.0.0.1:4317\"").unwrap();
        let e = TraceExport::start(&c).unwrap_err().to_string();
        assert!(e.contains("otlp_endpoint \"127.0.0.1:4317\""), "{e}");
    }
}
