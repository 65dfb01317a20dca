use base64::Engine;

use super::*;
use crate::clock::ManualClock;

const CI_TOKEN: &str = "hD0m3-generated-token-for-ci-main-0123456789";
const BOB_TOKEN: &str = "another-generated-token-for-bob-9876543210";

fn entry(id: &str, principal: &str, token: &str) -> String {
    format!(
        "{id} {principal} sha256:{}\n",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

fn setup(
    contents: &str,
) -> (
    tempfile::TempDir,
    Arc<ManualClock>,
    StaticTokenAuthenticator,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, contents).unwrap();
    let clock = Arc::new(ManualClock::at_unix(1_000));
    let config = StaticTokensConfig {
        file: Some(path),
        reload_check_secs: Some(1),
    };
    let auth =
        StaticTokenAuthenticator::new(&config, PrincipalKind::Person, clock.clone(), "t").unwrap();
    (dir, clock, auth)
}

fn with_header(value: &str) -> Credentials {
    Credentials {
        authorization: Some(value.to_string()),
        ..Credentials::default()
    }
}

fn basic(login: &str, password: &str) -> Credentials {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
    with_header(&format!("Basic {b64}"))
}

fn file() -> String {
    format!(
        "# corral tokens\n\n{}   {}",
        entry("ci-main", "ci/main", CI_TOKEN),
        entry("bob", "bob@example.com", BOB_TOKEN)
    )
}

#[test]
fn bearer_and_basic_tokens() {
    let (_dir, _clock, auth) = setup(&file());
    let p = auth
        .authenticate(&with_header(&format!("Bearer {CI_TOKEN}")))
        .unwrap();
    assert_eq!(p.to_string(), "person:ci/main");
    assert_eq!(p.credential_id(), Some("token:ci-main"));
    let p = auth
        .authenticate(&with_header(&format!("Bearer {BOB_TOKEN}")))
        .unwrap();
    assert_eq!(p.name(), "bob@example.com");
    // .netrc: login is the entry's id, password the token.
    let p = auth.authenticate(&basic("ci-main", CI_TOKEN)).unwrap();
    assert_eq!(p.name(), "ci/main");
    // Another entry's login with this token: refused.
    let err = auth.authenticate(&basic("bob", CI_TOKEN)).unwrap_err();
    assert!(matches!(err, AuthError::Refused { .. }));
}

#[test]
fn wrong_tokens_are_refused_without_echoing_them() {
    let (_dir, _clock, auth) = setup(&file());
    let wrong = "not-a-token-we-know-of-at-all-0000";
    for creds in [
        with_header(&format!("Bearer {wrong}")),
        basic("ci-main", wrong),
    ] {
        let err = auth.authenticate(&creds).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("unknown login or token") && !msg.contains(wrong),
            "{msg}"
        );
    }
    let err = auth.authenticate(&with_header("Bearer short")).unwrap_err();
    assert!(err.to_string().contains("shorter than 20"), "{err}");
    let err = auth
        .authenticate(&with_header("Negotiate abc"))
        .unwrap_err();
    assert!(
        err.to_string().contains("unsupported authorization scheme"),
        "{err}"
    );
    let err = auth.authenticate(&Credentials::default()).unwrap_err();
    assert!(matches!(err, AuthError::Missing { .. }));
}

#[test]
fn the_file_is_reread_so_tokens_are_added_and_revoked() {
    let (dir, clock, auth) = setup(&entry("ci-main", "ci/main", CI_TOKEN));
    let bob = with_header(&format!("Bearer {BOB_TOKEN}"));
    assert!(auth.authenticate(&bob).is_err());
    std::fs::write(dir.path().join("tokens"), entry("bob", "bob", BOB_TOKEN)).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(auth.authenticate(&bob).unwrap().name(), "bob");
    let ci = with_header(&format!("Bearer {CI_TOKEN}"));
    assert!(auth.authenticate(&ci).is_err(), "ci-main was revoked");
}

#[test]
fn file_errors_name_the_line() {
    let bad = |contents: &str| {
        parse_file(Path::new("/etc/tokens"), contents.as_bytes())
            .unwrap_err()
            .to_string()
    };
    let err = bad("# ok\nci ci/main\n");
    assert!(
        err.contains("/etc/tokens:2") && err.contains("2 fields"),
        "{err}"
    );
    let err = bad("ci ci/main md5:abc\n");
    assert!(err.contains(":1") && err.contains("sha256:"), "{err}");
    let err = bad("ci ci/main sha256:abc\n");
    assert!(err.contains("64 hexadecimal"), "{err}");
    let twice = format!(
        "{}{}",
        entry("ci", "a", CI_TOKEN),
        entry("ci", "b", BOB_TOKEN)
    );
    assert!(bad(&twice).contains("listed twice"));
    assert!(bad(&entry("a:b", "a", CI_TOKEN)).contains("`:`"));
    let config = StaticTokensConfig::default();
    let clock = Arc::new(ManualClock::at_unix(0));
    let err = StaticTokenAuthenticator::new(
        &config,
        PrincipalKind::Person,
        clock,
        "auth.authentication.static_tokens",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("auth.authentication.static_tokens.file"),
        "{err}"
    );
}

#[test]
fn constant_time_lookup_finds_any_position() {
    let entries: Vec<Entry> = (0..5u8)
        .map(|i| Entry {
            id: i.to_string(),
            principal: i.to_string(),
            hash: [i; 32],
        })
        .collect();
    for i in 0..5u8 {
        assert_eq!(
            StaticTokenAuthenticator::find(&entries, &[i; 32]),
            Some(i as usize)
        );
    }
    assert_eq!(StaticTokenAuthenticator::find(&entries, &[9; 32]), None);
    assert_eq!(StaticTokenAuthenticator::find(&[], &[0; 32]), None);
}
