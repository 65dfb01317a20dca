use super::*;
use crate::clock::ManualClock;

const POLICY: &str = r#"
[tenants.a]
instances = ["a"]
[tenants.a.quotas]
concurrent_executions = 2
queued_operations = 3
cas_bytes = 1000
rate."execute" = { per_second = 2, burst = 2 }

[tenants.b]
instances = ["b"]
"#;

fn setup() -> (Arc<ManualClock>, Policy, Quotas) {
    let clock = Arc::new(ManualClock::at_unix(0));
    let policy = Policy::from_toml(POLICY, "quota policy").unwrap();
    let quotas = Quotas::new(&policy, clock.clone());
    (clock, policy, quotas)
}

#[test]
fn rate_per_class_with_retry_delay() {
    let (clock, policy, quotas) = setup();
    let a = policy.tenant("a").unwrap();
    quotas.check_rate(a, Permission::Execute).unwrap();
    quotas.check_rate(a, Permission::Execute).unwrap();
    let over = quotas.check_rate(a, Permission::Execute).unwrap_err();
    assert_eq!(over.retry_after, Duration::from_millis(500));
    assert_eq!(
        over.quota,
        QuotaKind::Rate {
            class: Permission::Execute,
            per_second: 2.0
        }
    );
    let msg = over.to_string();
    assert!(
        msg.contains("`a`")
            && msg.contains("2 `execute` calls per second")
            && msg.contains("0.500 s"),
        "{msg}"
    );
    // Other classes and other tenants are not limited.
    for _ in 0..100 {
        quotas.check_rate(a, Permission::CasRead).unwrap();
        quotas
            .check_rate(policy.tenant("b").unwrap(), Permission::Execute)
            .unwrap();
    }
    clock.advance(over.retry_after);
    quotas.check_rate(a, Permission::Execute).unwrap();
    assert!(quotas.check_rate(a, Permission::Execute).is_err());
}

#[test]
fn counters_are_released_with_their_permits() {
    let (_clock, policy, quotas) = setup();
    let a = policy.tenant("a").unwrap();
    let q: Vec<QuotaPermit> = (0..3).map(|_| quotas.try_enqueue(a).unwrap()).collect();
    let over = quotas.try_enqueue(a).err().unwrap();
    assert_eq!(over.quota, QuotaKind::QueuedOperations(3));
    assert_eq!(over.retry_after, COUNTER_RETRY_AFTER);
    assert_eq!(quotas.usage(a), QuotaUsage { queued: 3 });
    drop(q);
    assert_eq!(quotas.usage(a), QuotaUsage { queued: 0 });
    let _again = quotas.try_enqueue(a).unwrap();
    // An unknown tenant (the local one) is unlimited but still counted.
    let local = TenantId::local();
    let permits: Vec<QuotaPermit> = (0..50)
        .map(|_| quotas.try_enqueue(&local).unwrap())
        .collect();
    assert_eq!(quotas.usage(&local).queued, 50);
    drop(permits);
}

#[test]
fn cas_bytes() {
    let (_clock, policy, quotas) = setup();
    let a = policy.tenant("a").unwrap();
    quotas.check_cas_bytes(a, 900, 100).unwrap();
    let over = quotas.check_cas_bytes(a, 900, 101).unwrap_err();
    assert_eq!(over.quota, QuotaKind::CasBytes(1000));
    assert_eq!(over.retry_after, CAS_BYTES_RETRY_AFTER);
    quotas
        .check_cas_bytes(policy.tenant("b").unwrap(), u64::MAX, 1)
        .unwrap();
}

#[test]
fn a_reload_changes_limits_and_keeps_counts() {
    let (_clock, policy, quotas) = setup();
    let a = policy.tenant("a").unwrap().clone();
    let _held: Vec<QuotaPermit> = (0..2).map(|_| quotas.try_enqueue(&a).unwrap()).collect();
    let tighter = Policy::from_toml(
        "[tenants.a]\ninstances = [\"a\"]\nquotas = { queued_operations = 2 }\n",
        "reloaded",
    )
    .unwrap();
    quotas.update(&tighter);
    assert_eq!(quotas.usage(&a).queued, 2);
    assert!(quotas.try_enqueue(&a).is_err());
    // The rate quota is gone with the reload.
    for _ in 0..10 {
        quotas.check_rate(&a, Permission::Execute).unwrap();
    }
}
