//! The JWT matrix: `none`, algorithm confusion, expired, future `nbf`,
//! wrong `aud`/`iss`, missing `exp`, over the maximum lifetime, unknown key
//! id, key rotation through the JWKS file.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use rcgen::{KeyPair, RsaKeySize};
use serde_json::json;

use super::*;
use crate::clock::ManualClock;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://id.example.com";

struct Key {
    encoding: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
    public_der: Vec<u8>,
    public_raw: Vec<u8>,
}

impl Key {
    fn new(pair: KeyPair, alg: Algorithm, kid: &'static str) -> Key {
        let pem = pair.serialize_pem();
        let encoding = match alg.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(pem.as_bytes()),
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .unwrap();
        Key {
            encoding,
            alg,
            kid,
            public_der: rcgen::PublicKeyData::der_bytes(&pair).to_vec(),
            public_raw: pair.public_key_raw().to_vec(),
        }
    }

    fn jwk(&self) -> Value {
        if self.alg == Algorithm::EdDSA {
            // rcgen writes PKCS#8 v2, which jsonwebtoken cannot derive a JWK from.
            let x = b64(&self.public_raw);
            return json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA" });
        }
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.to_string());
        serde_json::to_value(jwk).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    auth: JwtAuthenticator,
    ec1: Key,
    ec2: Key,
    ed: Key,
    rsa: Key,
}

fn write_jwks(dir: &Path, keys: &[&Key]) {
    let set = json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() });
    std::fs::write(dir.join("jwks.json"), serde_json::to_vec(&set).unwrap()).unwrap();
}

use std::path::Path;

fn fixture() -> Fixture {
    let ec1 = Key::new(KeyPair::generate().unwrap(), Algorithm::ES256, "ec-1");
    let ec2 = Key::new(KeyPair::generate().unwrap(), Algorithm::ES256, "ec-2");
    let ed = Key::new(
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        Algorithm::EdDSA,
        "ed-1",
    );
    let rsa_pair = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let rsa = Key::new(rsa_pair, Algorithm::RS256, "rsa-1");
    let dir = tempfile::tempdir().unwrap();
    write_jwks(dir.path(), &[&ec1, &ed, &rsa]);
    let clock = Arc::new(ManualClock::at_unix(NOW as u64));
    let config = JwtConfig {
        jwks_file: Some(dir.path().join("jwks.json")),
        issuers: vec![ISS.to_string()],
        audiences: vec!["corral".to_string()],
        max_lifetime_secs: Some(3600),
        leeway_secs: Some(30),
        reload_check_secs: Some(5),
        ..JwtConfig::default()
    };
    let auth = JwtAuthenticator::new(&config, PrincipalKind::Person, clock.clone(), "jwt").unwrap();
    Fixture {
        dir,
        clock,
        auth,
        ec1,
        ec2,
        ed,
        rsa,
    }
}

fn claims() -> Value {
    json!({ "sub": "alice@example.com", "iss": ISS, "aud": "corral", "iat": NOW - 60, "exp": NOW + 600 })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

fn bearer(token: &str) -> Credentials {
    Credentials {
        authorization: Some(format!("Bearer {token}")),
        ..Credentials::default()
    }
}

impl Fixture {
    fn check(&self, token: &str) -> Result<Principal, AuthError> {
        self.auth.authenticate(&bearer(token))
    }

    fn refused(&self, token: &str, why: &str) {
        match self.check(token) {
            Err(AuthError::Refused { reason }) => {
                assert!(
                    reason.starts_with("JWT: ") && reason.contains(why),
                    "{reason:?} lacks {why:?}"
                )
            }
            other => panic!("expected a refusal ({why}), got {other:?}"),
        }
    }
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[test]
fn valid_tokens_of_each_key_type() {
    let f = fixture();
    for key in [&f.ec1, &f.ed, &f.rsa] {
        let p = f.check(&key.sign(&claims())).unwrap();
        assert_eq!(p.to_string(), "person:alice@example.com");
        assert_eq!(p.credential_id(), Some(format!("jwt:{}", key.kid).as_str()));
    }
    let token = f.ec1.sign(&with(
        with(claims(), "jti", json!("t-42")),
        "aud",
        json!(["x", "corral"]),
    ));
    assert_eq!(
        f.check(&token).unwrap().credential_id(),
        Some("jwt:ec-1:t-42")
    );
}

#[test]
fn unsigned_and_confused_algorithms_are_refused() {
    let f = fixture();
    let payload = b64(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({ "alg": alg, "kid": "ec-1" }).to_string().as_bytes());
        f.refused(&format!("{header}.{payload}."), "`none`");
    }
    // Classic confusion: HS256 keyed with the RSA public key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".to_string());
    for secret in [
        f.rsa.public_der.clone(),
        f.rsa.jwk()["n"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        f.refused(&token, "algorithm HS256 is not allowed");
    }
    // An allowed algorithm pointed at a key of another family or curve.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ec-1".to_string());
    let token = jsonwebtoken::encode(&header, &claims(), &f.ed.encoding).unwrap();
    f.refused(&token, "not a key for EdDSA");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("ed-1".to_string());
    let token = jsonwebtoken::encode(&header, &claims(), &f.rsa.encoding).unwrap();
    f.refused(&token, "not a key for RS256");
    // PS256 is allowed but the RSA key's JWK says RS256.
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some("rsa-1".to_string());
    let token = jsonwebtoken::encode(&header, &claims(), &f.rsa.encoding).unwrap();
    f.refused(&token, "not a key for PS256");
}

#[test]
fn time_claims() {
    let f = fixture();
    f.refused(
        &f.ec1.sign(&with(claims(), "exp", json!(NOW - 31))),
        "expired",
    );
    // Within the leeway.
    f.check(&f.ec1.sign(&with(claims(), "exp", json!(NOW - 29))))
        .unwrap();
    f.refused(&f.ec1.sign(&without(claims(), "exp")), "no `exp`");
    f.refused(
        &f.ec1.sign(&with(claims(), "exp", json!("soon"))),
        "`exp` is not a number",
    );
    f.refused(
        &f.ec1.sign(&with(claims(), "nbf", json!(NOW + 300))),
        "not valid yet",
    );
    f.check(&f.ec1.sign(&with(claims(), "nbf", json!(NOW - 10))))
        .unwrap();
    f.refused(
        &f.ec1.sign(&with(claims(), "iat", json!(NOW + 300))),
        "issued in the future",
    );
    // Over the maximum lifetime (3600 s), measured from iat, else nbf, else now.
    f.refused(
        &f.ec1.sign(&with(claims(), "exp", json!(NOW - 60 + 3601))),
        "exceeds the maximum of 3600 s",
    );
    f.check(&f.ec1.sign(&with(claims(), "exp", json!(NOW - 60 + 3600))))
        .unwrap();
    let no_iat = without(claims(), "iat");
    f.refused(
        &f.ec1.sign(&with(no_iat.clone(), "exp", json!(NOW + 4000))),
        "lifetime",
    );
    f.check(&f.ec1.sign(&with(no_iat, "exp", json!(NOW + 3000))))
        .unwrap();
    // The clock moves: a valid token expires.
    let token = f.ec1.sign(&claims());
    f.check(&token).unwrap();
    f.clock.advance(Duration::from_secs(631));
    f.refused(&token, "expired");
}

#[test]
fn issuer_audience_and_subject() {
    let f = fixture();
    f.refused(
        &f.ec1
            .sign(&with(claims(), "iss", json!("https://evil.example.com"))),
        "issuer",
    );
    f.refused(&f.ec1.sign(&without(claims(), "iss")), "issuer");
    f.refused(
        &f.ec1.sign(&with(claims(), "aud", json!("other"))),
        "audience",
    );
    f.refused(
        &f.ec1.sign(&with(claims(), "aud", json!(["a", "b"]))),
        "audience",
    );
    f.refused(&f.ec1.sign(&without(claims(), "aud")), "audience");
    f.refused(
        &f.ec1.sign(&without(claims(), "sub")),
        "no usable `sub` claim",
    );
    f.refused(
        &f.ec1.sign(&with(claims(), "sub", json!(""))),
        "no usable `sub` claim",
    );
}

#[test]
fn key_ids_and_signatures() {
    let f = fixture();
    f.refused(&f.ec2.sign(&claims()), "unknown key id");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = None;
    let token = jsonwebtoken::encode(&header, &claims(), &f.ec1.encoding).unwrap();
    f.refused(&token, "no key id");
    // Signed by ec-2 but claiming to be ec-1.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".to_string());
    let token = jsonwebtoken::encode(&header, &claims(), &f.ec2.encoding).unwrap();
    f.refused(&token, "bad signature");
    // A payload swapped under a good signature.
    let good = f.ec1.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = b64(with(claims(), "sub", json!("root")).to_string().as_bytes());
    f.refused(
        &format!("{}.{forged}.{}", parts[0], parts[2]),
        "bad signature",
    );
    f.refused("a.b", "not a JWT");
    f.refused("!!!.e30.sig", "malformed header");
    // Not a bearer token: not this method's credential.
    let basic = Credentials {
        authorization: Some("Basic Y2k6eA==".to_string()),
        ..Credentials::default()
    };
    assert!(matches!(
        f.auth.authenticate(&basic),
        Err(AuthError::Missing { .. })
    ));
    assert!(matches!(
        f.auth.authenticate(&Credentials::default()),
        Err(AuthError::Missing { .. })
    ));
}

#[test]
fn key_rotation_through_the_jwks_file() {
    let f = fixture();
    let old = f.ec1.sign(&claims());
    let new = f.ec2.sign(&claims());
    f.check(&old).unwrap();
    f.refused(&new, "unknown key id");
    write_jwks(f.dir.path(), &[&f.ec2]);
    // Until the next check the old set serves.
    f.check(&old).unwrap();
    f.clock.advance(Duration::from_secs(5));
    f.check(&new).unwrap();
    f.refused(&old, "unknown key id");
    // A broken file keeps the last good set.
    std::fs::write(f.dir.path().join("jwks.json"), b"{ not json").unwrap();
    f.clock.advance(Duration::from_secs(5));
    f.check(&new).unwrap();
}

#[test]
fn settings_are_checked() {
    let f = fixture();
    let clock: Arc<dyn Clock> = f.clock.clone();
    let base = JwtConfig {
        jwks_file: Some(f.dir.path().join("jwks.json")),
        issuers: vec![ISS.to_string()],
        audiences: vec!["corral".to_string()],
        ..JwtConfig::default()
    };
    let err = |config: JwtConfig| {
        JwtAuthenticator::new(
            &config,
            PrincipalKind::Person,
            clock.clone(),
            "auth.authentication.jwt",
        )
        .err()
        .unwrap()
        .to_string()
    };
    let algs = |a: &[&str]| JwtConfig {
        algorithms: Some(a.iter().map(|s| s.to_string()).collect()),
        ..base.clone()
    };
    assert!(err(algs(&["none"])).contains("`none`"));
    assert!(err(algs(&["HS256"])).contains("shared-secret"));
    assert!(err(algs(&["XY999"])).contains("unknown algorithm"));
    assert!(err(algs(&[])).contains("algorithms"));
    let e = err(JwtConfig {
        issuers: vec![],
        ..base.clone()
    });
    assert!(e.contains("auth.authentication.jwt.issuers"), "{e}");
    assert!(err(JwtConfig {
        audiences: vec![],
        ..base.clone()
    })
    .contains("audiences"));
    assert!(err(JwtConfig {
        jwks_file: None,
        ..base.clone()
    })
    .contains("jwks_file"));
    assert!(err(JwtConfig {
        max_lifetime_secs: Some(0),
        ..base.clone()
    })
    .contains("max_lifetime_secs"));
    // Only ES256 allowed: an EdDSA token is refused.
    let auth =
        JwtAuthenticator::new(&algs(&["ES256"]), PrincipalKind::Person, clock, "jwt").unwrap();
    let r = auth.authenticate(&bearer(&f.ed.sign(&claims())));
    assert!(r.unwrap_err().to_string().contains("EdDSA is not allowed"));
}

#[test]
fn key_set_files() {
    let f = fixture();
    let path = Path::new("/etc/jwks.json");
    let parse = |v: Value| parse_key_set(path, v.to_string().as_bytes()).map(|s| s.keys.len());
    let ec = f.ec1.jwk();
    let oct = json!({ "kty": "oct", "kid": "s", "k": "c2VjcmV0" });
    let enc = with(f.ec2.jwk(), "use", json!("enc"));
    let nokid = without(f.ed.jwk(), "kid");
    assert_eq!(
        parse(json!({ "keys": [ec.clone(), oct.clone(), enc, nokid] })).unwrap(),
        1
    );
    let err = parse(json!({ "keys": [oct] })).unwrap_err().to_string();
    assert!(
        err.contains("/etc/jwks.json") && err.contains("no usable"),
        "{err}"
    );
    let err = parse(json!({ "keys": [ec.clone(), ec.clone()] }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("two keys"), "{err}");
    assert!(parse(json!({ "k": [] })).is_err());
    let mislabeled = with(ec, "alg", json!("RS256"));
    assert!(parse(json!({ "keys": [mislabeled] })).is_err());
}
