use super::*;
use crate::clock::ManualClock;
use crate::config::{PeerCredentialsConfig, StaticTokensConfig};

/// A method that answers what it was built with.
struct Fixed(Result<Principal, AuthError>);

impl Authenticator for Fixed {
    fn authenticate(&self, _: &Credentials) -> Result<Principal, AuthError> {
        self.0.clone()
    }
}

fn ok(name: &str, id: &str) -> Arc<dyn Authenticator> {
    Arc::new(Fixed(Ok(Principal::person(name, id))))
}

fn missing(what: &str) -> Arc<dyn Authenticator> {
    Arc::new(Fixed(Err(AuthError::missing(what))))
}

fn refused(why: &str) -> Arc<dyn Authenticator> {
    Arc::new(Fixed(Err(AuthError::Refused { reason: why.into() })))
}

#[test]
fn any_of() {
    let c = Credentials::default();
    let p = AnyOf(vec![missing("a"), refused("bad"), ok("alice", "t")])
        .authenticate(&c)
        .unwrap();
    assert_eq!(p.name(), "alice");
    let err = AnyOf(vec![missing("a certificate"), missing("a token")])
        .authenticate(&c)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no credential: expected a certificate or a token"
    );
    let err = AnyOf(vec![
        missing("x"),
        refused("JWT: expired"),
        refused("static token: unknown"),
    ])
    .authenticate(&c)
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "credential refused: JWT: expired; static token: unknown"
    );
}

#[test]
fn all_of() {
    let c = Credentials::default();
    let p = AllOf(vec![ok("spiffe://farm/ci", "x509:1"), ok("ci", "token:ci")])
        .authenticate(&c)
        .unwrap();
    assert_eq!(p.name(), "spiffe://farm/ci");
    assert_eq!(p.credential_id(), Some("x509:1+token:ci"));
    let err = AllOf(vec![ok("a", "1"), missing("a token")])
        .authenticate(&c)
        .unwrap_err();
    assert!(matches!(err, AuthError::Missing { .. }));
    assert!(AllOf(vec![refused("no"), ok("a", "1")])
        .authenticate(&c)
        .is_err());
    assert!(AllOf(vec![]).authenticate(&c).is_err());
}

#[test]
fn local_is_loopback_only() {
    let mut c = Credentials {
        peer_addr: Some("127.0.0.1:5000".parse().unwrap()),
        ..Credentials::default()
    };
    assert_eq!(
        LocalAuthenticator.authenticate(&c).unwrap(),
        Principal::local()
    );
    c.peer_addr = Some("192.0.2.1:5000".parse().unwrap());
    let err = LocalAuthenticator.authenticate(&c).unwrap_err();
    assert!(
        err.to_string().contains("not a loopback connection"),
        "{err}"
    );
    c.unix_socket = true;
    assert!(LocalAuthenticator.authenticate(&c).is_ok());
}

#[test]
fn built_from_config_in_a_fixed_order() {
    let dir = tempfile::tempdir().unwrap();
    let token = "ci-token-0123456789-abcdefghij";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    std::fs::write(
        dir.path().join("tokens"),
        format!("ci ci/main sha256:{hash}\n"),
    )
    .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix(0));
    let mut config = AuthenticationConfig {
        peer_credentials: Some(PeerCredentialsConfig::default()),
        static_tokens: Some(StaticTokensConfig {
            file: Some(dir.path().join("tokens")),
            reload_check_secs: None,
        }),
        ..AuthenticationConfig::default()
    };
    let creds = Credentials {
        authorization: Some(format!("Bearer {token}")),
        peer_uid: Some(1001),
        unix_socket: true,
        ..Credentials::default()
    };
    let any = build_authenticator(&config, PrincipalKind::Worker, clock.clone(), "t").unwrap();
    assert_eq!(
        any.authenticate(&creds).unwrap().to_string(),
        "worker:uid:1001"
    );
    config.combine = Combine::AllOf;
    let all = build_authenticator(&config, PrincipalKind::Worker, clock.clone(), "t").unwrap();
    let p = all.authenticate(&creds).unwrap();
    assert_eq!(p.credential_id(), Some("uid:1001+token:ci"));
    let no_token = Credentials {
        authorization: None,
        ..creds.clone()
    };
    assert!(all.authenticate(&no_token).is_err());
    assert!(any.authenticate(&no_token).is_ok());
    let err = build_authenticator(
        &AuthenticationConfig::default(),
        PrincipalKind::Person,
        clock,
        "auth.authentication",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("[auth.authentication]"), "{err}");
}
