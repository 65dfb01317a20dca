use super::*;

const POLICY: &str = r#"
[tenants.team-a]
instances = ["team-a", "shared/a"]
worker_pools = ["pool-a"]

[tenants.team-b]
instances = ["team-b", "team-ab", ""]
quotas = { queued_operations = 5 }

[tenants.tools]
instances = ["tools"]
shared_readable = true

[default_quotas]
queued_operations = 100

[[grants]]
principals = ["alice@example.com", "ci-a-*"]
tenant = "team-a"
permissions = ["cas.read", "cas.write", "ac.read", "execute", "operations.read"]

[[grants]]
principals = ["ci-a-release"]
tenant = "team-a"
permissions = ["ac.write"]

[[grants]]
principals = ["bob@example.com"]
tenant = "team-b"
permissions = ["cas.read", "ac.read"]

[[grants]]
principals = ["root@example.com"]
tenant = "*"
permissions = ["admin", "operations.cancel"]

[[workers]]
principals = ["uid:1001", "spiffe://farm/a/*"]
pools = ["pool-a"]

[[workers]]
principals = ["uid:2002"]
pools = ["pool-b"]
permissions = ["worker", "cas.read", "cas.write", "ac.read"]
"#;

fn policy() -> Policy {
    Policy::from_toml(POLICY, "test policy").unwrap()
}

fn load_err(text: &str) -> String {
    Policy::from_toml(text, "test policy")
        .unwrap_err()
        .to_string()
}

#[test]
fn instance_prefixes_match_per_component() {
    let p = policy();
    let of = |i: &str| p.tenant_of(i).map(|t| t.as_str().to_string());
    assert_eq!(of("team-a").as_deref(), Some("team-a"));
    assert_eq!(of("team-a/x/y").as_deref(), Some("team-a"));
    assert_eq!(of("shared/a/z").as_deref(), Some("team-a"));
    assert_eq!(of("team-ab").as_deref(), Some("team-b"));
    assert_eq!(of("team-ab/x").as_deref(), Some("team-b"));
    assert_eq!(of("").as_deref(), Some("team-b"));
    assert_eq!(of("team"), None);
    assert_eq!(of("shared"), None);
    assert_eq!(of("shared/ab"), None);
    assert_eq!(of("/team-a"), None);
    assert_eq!(of("unknown"), None);
    let a = p.tenant("team-a").unwrap();
    assert_eq!(p.prefixes(a).len(), 2);
}

#[test]
fn overlapping_prefixes_fail_naming_both_tenants() {
    let err = load_err(
        "[tenants.a]\ninstances = [\"team\"]\n[tenants.b]\ninstances = [\"x\", \"team/b\"]\n",
    );
    for word in ["`a`", "`b`", "\"team\"", "\"team/b\""] {
        assert!(err.contains(word), "{word} missing from: {err}");
    }
    let err =
        load_err("[tenants.a]\ninstances = [\"same\"]\n[tenants.b]\ninstances = [\"same\"]\n");
    assert!(
        err.contains("`a`") && err.contains("`b`") && err.contains("\"same\""),
        "{err}"
    );
    // Not an overlap: a component boundary, and one tenant's own nesting.
    Policy::from_toml(
        "[tenants.a]\ninstances = [\"team\", \"team/x\"]\n[tenants.b]\ninstances = [\"teams\"]\n",
        "ok",
    )
    .unwrap();
    let err = load_err("[tenants.a]\ninstances = [\"a//b\"]\n");
    assert!(
        err.contains("`a`") && err.contains("empty component"),
        "{err}"
    );
}

#[test]
fn grants_give_what_they_say_and_nothing_else() {
    let p = policy();
    let alice = Principal::person("alice@example.com", "jwt:k1");
    let t = p
        .authorize(&alice, Permission::Execute, "team-a/linux")
        .unwrap();
    assert_eq!(t.as_str(), "team-a");
    let denied = p
        .authorize(&alice, Permission::AcWrite, "team-a")
        .unwrap_err();
    assert_eq!(denied.reason, DenyReason::NotGranted);
    let msg = denied.to_string();
    assert!(
        msg.contains("`ac.write`") && msg.contains("\"team-a\""),
        "{msg}"
    );
    // Tenant A's principal on B's instance: denied, and B is not named.
    let denied = p
        .authorize(&alice, Permission::CasRead, "team-b/x")
        .unwrap_err();
    assert!(!denied.to_string().contains("team-b`"), "{denied}");
    assert_eq!(denied.tenant.as_ref().map(|t| t.as_str()), Some("team-b"));
    let ci = Principal::person("ci-a-release", "static:ci");
    assert!(p.permissions(&ci, "team-a").contains(Permission::AcWrite));
    assert!(p.permissions(&ci, "team-a").contains(Permission::CasWrite));
    assert!(!p
        .permissions(&alice, "team-a")
        .contains(Permission::AcWrite));
    let nobody = Principal::person("mallory", "static:m");
    assert!(p.permissions(&nobody, "team-a").is_empty());
    let denied = p
        .authorize(&nobody, Permission::CasRead, "nowhere")
        .unwrap_err();
    assert_eq!(denied.reason, DenyReason::NoTenant);
    assert!(
        denied.to_string().contains("belongs to no tenant"),
        "{denied}"
    );
}

#[test]
fn farm_wide_grants() {
    let p = policy();
    let root = Principal::person("root@example.com", "x509:ab");
    p.authorize_farm(&root, Permission::Admin).unwrap();
    p.authorize(&root, Permission::OperationsCancel, "team-b")
        .unwrap();
    let alice = Principal::person("alice@example.com", "jwt:k1");
    let denied = p.authorize_farm(&alice, Permission::Admin).unwrap_err();
    assert!(
        denied.to_string().contains("`admin` denied on the farm"),
        "{denied}"
    );
    assert!(p.authorize_farm(&root, Permission::Worker).is_err());
    p.authorize_farm(&Principal::farm(), Permission::Admin)
        .unwrap();
    p.authorize(&Principal::farm(), Permission::AcWrite, "team-a")
        .unwrap();
}

#[test]
fn workers_get_their_entries_in_their_pools_only() {
    let p = policy();
    let wa = Principal::worker("spiffe://farm/a/w1", "x509:01");
    let wb = Principal::worker("uid:2002", "uid:2002");
    assert_eq!(p.worker_pools(&wa), ["pool-a"]);
    p.authorize_farm(&wa, Permission::Worker).unwrap();
    p.authorize(&wa, Permission::CasWrite, "team-a").unwrap();
    p.authorize(&wa, Permission::Worker, "team-a").unwrap();
    // Team A allows pool-a only.
    let denied = p.authorize(&wb, Permission::CasRead, "team-a").unwrap_err();
    assert_eq!(denied.reason, DenyReason::PoolNotAllowed);
    assert!(!p.worker_may_serve(&wb, p.tenant("team-a").unwrap()));
    // Team B allows any pool; uid:2002's entry adds ac.read.
    p.authorize(&wb, Permission::AcRead, "team-b").unwrap();
    assert!(p.authorize(&wa, Permission::AcRead, "team-b").is_err());
    for w in [&wa, &wb] {
        assert!(p.authorize(w, Permission::AcWrite, "team-b").is_err());
        assert!(p.authorize(w, Permission::Execute, "team-b").is_err());
    }
    // A worker principal no entry lists gets nothing.
    let stranger = Principal::worker("uid:666", "uid:666");
    assert!(p.authorize_farm(&stranger, Permission::Worker).is_err());
    assert!(p.worker_pools(&stranger).is_empty());
    // A person whose name matches a worker pattern is still no worker.
    let person = Principal::person("uid:1001", "static:x");
    let denied = p
        .authorize(&person, Permission::Worker, "team-a")
        .unwrap_err();
    assert_eq!(denied.reason, DenyReason::WrongKind(PrincipalKind::Person));
    assert!(p.authorize_farm(&person, Permission::Worker).is_err());
}

#[test]
fn workers_can_never_hold_ac_write() {
    let err = load_err(
        "[[workers]]\nprincipals = [\"uid:*\"]\npermissions = [\"worker\", \"ac.write\"]\n",
    );
    assert!(
        err.contains("workers[0]") && err.contains("`ac.write`"),
        "{err}"
    );
    let err = load_err("[[workers]]\nprincipals = [\"w\"]\npermissions = [\"admin\"]\n");
    assert!(err.contains("`admin`"), "{err}");
    let err = load_err(
        "[tenants.a]\ninstances=[\"a\"]\n[[grants]]\nprincipals = [\"*\"]\ntenant = \"a\"\npermissions = [\"worker\"]\n",
    );
    assert!(
        err.contains("grants[0].permissions") && err.contains("[[workers]]"),
        "{err}"
    );
}

#[test]
fn malformed_grants_are_named() {
    let base = "[tenants.a]\ninstances=[\"a\"]\n[[grants]]\n";
    let err = load_err(&format!(
        "{base}principals = [\"x\"]\ntenant = \"b\"\npermissions = [\"cas.read\"]\n"
    ));
    assert!(err.contains("grants[0]") && err.contains("`b`"), "{err}");
    let err = load_err(&format!(
        "{base}principals = [\"x\"]\npermissions = [\"cas.read\"]\n"
    ));
    assert!(err.contains("grants[0].tenant"), "{err}");
    let err = load_err(&format!(
        "{base}principals = []\ntenant = \"a\"\npermissions = [\"cas.read\"]\n"
    ));
    assert!(err.contains("grants[0].principals"), "{err}");
    let err = load_err(&format!(
        "{base}principals = [\"x\"]\ntenant = \"a\"\npermissions = []\n"
    ));
    assert!(err.contains("grants[0].permissions"), "{err}");
    let err = load_err(&format!(
        "{base}principals = [\"x\"]\ntenant = \"a\"\npermissions = [\"admin\"]\n"
    ));
    assert!(
        err.contains("tenant = \\\"*\\\"") || err.contains("tenant = \"*\""),
        "{err}"
    );
    let err = load_err("[tenants.\"a b\"]\n");
    assert!(err.contains("tenant name"), "{err}");
    let err = load_err("[tenants.a]\nworker_pools = []\n");
    assert!(err.contains("tenants.a.worker_pools"), "{err}");
    let err = load_err("[tenants.a]\nbogus = 1\n");
    assert!(
        err.contains("bogus") && err.contains("test policy"),
        "{err}"
    );
}

#[test]
fn tenant_attributes() {
    let p = policy();
    let tools = p.tenant("tools").unwrap();
    let b = p.tenant("team-b").unwrap();
    assert!(p.is_shared_readable(tools));
    assert!(!p.is_shared_readable(b));
    assert_eq!(p.shared_readable_tenants().collect::<Vec<_>>(), [tools]);
    assert_eq!(p.quota(b).unwrap().queued_operations, Some(5));
    assert_eq!(p.quota(tools).unwrap().queued_operations, Some(100));
    assert_eq!(p.tenant_worker_pools(b), None);
    assert_eq!(p.tenants().count(), 3);
    assert!(!p.is_local());
}

#[test]
fn zero_config_policy() {
    let p = Policy::local();
    assert!(p.is_local());
    let local = Principal::local();
    for instance in ["", "anything", "a/b"] {
        assert_eq!(p.tenant_of(instance).unwrap().as_str(), "local");
    }
    for perm in Permission::ALL {
        let r = p.authorize(&local, perm, "x");
        assert_eq!(r.is_ok(), perm != Permission::Worker, "{perm}");
    }
    assert!(p.permissions(&local, "").contains(Permission::AcWrite));
    p.authorize_farm(&local, Permission::Admin).unwrap();
    assert!(p.authorize_farm(&local, Permission::Worker).is_err());
    let worker = Principal::worker("uid:1000", "uid:1000");
    p.authorize_farm(&worker, Permission::Worker).unwrap();
    p.authorize(&worker, Permission::CasWrite, "x").unwrap();
    assert!(p.authorize(&worker, Permission::AcWrite, "x").is_err());
    assert_eq!(p.worker_pools(&worker), [DEFAULT_POOL]);
    // Once a policy is configured the local user holds nothing.
    let configured = policy();
    assert!(configured
        .authorize(&local, Permission::CasRead, "team-a")
        .is_err());
}

#[test]
fn load_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, POLICY).unwrap();
    assert_eq!(Policy::load(&path).unwrap().tenants().count(), 3);
    let err = Policy::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.toml"), "{err}");
}
