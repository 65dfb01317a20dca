//! TLS for Corral's listeners and clients, on rustls with the aws-lc-rs
//! provider (the one the workspace already builds).
//!
//! # Server
//!
//! A listener's `[…tls]` table deserializes into [`TlsServerConfig`];
//! [`ServerTls::from_config`] checks it and loads its files; and
//! [`ServerTls::incoming`] turns a bound `TcpListener` into the stream of
//! TLS connections that tonic serves:
//!
//! ```no_run
//! # async fn run(config: corral_tls::TlsServerConfig, router: tonic::service::Routes)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let tls = corral_tls::ServerTls::from_config(&config)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8980").await?;
//! tonic::transport::Server::builder()
//!     .add_routes(router)
//!     .serve_with_incoming(tls.incoming(listener))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The server certificate and key are re-read when their files change
//! (checked at most once a second), and so are the CRLs: rotating either
//! is replacing files. A failed or slow handshake never stops or delays
//! the listener (see [`TlsIncoming`]).
//!
//! # Who is calling: the client's certificate in a handler
//!
//! Every request that arrived over a [`TlsConnection`] carries, in its
//! extensions, tonic's `TlsConnectInfo<TcpConnectInfo>` (aliased here as
//! [`ConnectInfo`]): the client's address and its *verified* certificate
//! chain, the client's own certificate first. Reading it needs tonic only,
//! not this crate:
//!
//! ```
//! use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
//!
//! fn peer<T>(req: &tonic::Request<T>) {
//!     // Needs tonic's `tls-aws-lc` feature (or `tls-ring`, which would
//!     // build a second crypto library): it exports `TlsConnectInfo`.
//!     if let Some(info) = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() {
//!         let addr = info.get_ref().remote_addr();
//!         // `None` when the client presented no certificate
//!         // (`client_auth = "optional"`).
//!         let chain = info.peer_certs(); // Option<Arc<Vec<CertificateDer<'static>>>>
//!         let _ = (addr, chain);
//!     }
//!     // The same through tonic's shortcuts:
//!     let _ = (req.remote_addr(), req.peer_certs());
//! }
//! ```
//!
//! The extension is absent on a plaintext listener (tonic then inserts
//! `TcpConnectInfo`), so "no `TlsConnectInfo`" means "not TLS" and "no
//! certificates" means "TLS without a client certificate".
//!
//! # Client
//!
//! [`TlsClientConfig`] says which CA to trust and which certificate to
//! present; [`TlsClientConfig::apply`] configures a tonic `Endpoint` for an
//! `https://` URL with it (or [`TlsClientConfig::tonic_config`] gives
//! tonic's `ClientTlsConfig`).
#![deny(missing_docs)]

mod cert_resolver;
mod client_config;
mod client_verifier;
mod connection;
mod error;
mod incoming;
mod load;
mod reloading;
mod server_config;
mod server_tls;

pub use client_config::TlsClientConfig;
pub use connection::{ConnectInfo, TlsConnection};
pub use error::{Error, Result};
pub use incoming::TlsIncoming;
pub use rustls::pki_types::CertificateDer;
pub use server_config::{ClientAuth, CrlScope, TlsServerConfig, UnknownStatus};
pub use server_tls::{ServerTls, ALPN_H2};
