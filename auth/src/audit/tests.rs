use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::denied::DenyReason;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn events_are_json_lines_with_every_field() {
    let alice = Principal::person("alice@example.com", "jwt:k1:t-7");
    let tenant = TenantId::new("team-a").unwrap();
    let event = AuditEvent::new(AuditKind::AcWrite, at(1_800_000_000))
        .principal(&alice)
        .tenant(&tenant)
        .instance("team-a/linux")
        .digest("ab12/142")
        .peer("127.0.0.1:5000")
        .field("worker", "uid:1001")
        .field("sandbox_profile", "default");
    let line = event.to_json();
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["time"], "2027-01-15T08:00:00Z");
    assert_eq!(v["event"], "ac_write");
    assert_eq!(v["principal"], "alice@example.com");
    assert_eq!(v["principal_kind"], "person");
    assert_eq!(v["credential_id"], "jwt:k1:t-7");
    assert_eq!(v["tenant"], "team-a");
    assert_eq!(v["instance"], "team-a/linux");
    assert_eq!(v["digest"], "ab12/142");
    assert_eq!(v["peer"], "127.0.0.1:5000");
    assert_eq!(v["fields"]["worker"], "uid:1001");
    assert!(v.get("permission").is_none() && v.get("detail").is_none());
    let back: AuditEvent = serde_json::from_str(&line).unwrap();
    assert_eq!(back, event);
}

#[test]
fn denials_and_unauthenticated_calls() {
    let denied = Denied {
        permission: Permission::AcWrite,
        instance: Some("team-b".into()),
        tenant: Some(TenantId::new("team-b").unwrap()),
        principal: Principal::person("alice", "token:a"),
        reason: DenyReason::NotGranted,
    };
    let e = AuditEvent::denied(at(0), &denied);
    assert_eq!(e.event, AuditKind::Denied);
    assert_eq!(e.permission, Some(Permission::AcWrite));
    assert_eq!(e.instance.as_deref(), Some("team-b"));
    assert_eq!(e.tenant.as_deref(), Some("team-b"));
    assert_eq!(e.credential_id.as_deref(), Some("token:a"));
    assert!(e.detail.as_deref().unwrap().contains("`ac.write`"));
    let creds = Credentials {
        authorization: Some("Bearer s3cret-token-value".into()),
        peer_uid: Some(1001),
        unix_socket: true,
        ..Credentials::default()
    };
    let err = AuthError::refused("static token", "unknown login or token");
    let e = AuditEvent::unauthenticated(at(0), &err, &creds);
    assert_eq!(e.peer.as_deref(), Some("unix uid=1001"));
    assert!(!e.to_json().contains("s3cret"));
    let e = AuditEvent::new(AuditKind::Admin, at(0)).peer_of(&Credentials {
        peer_addr: Some("[::1]:9".parse().unwrap()),
        ..Credentials::default()
    });
    assert_eq!(e.peer.as_deref(), Some("[::1]:9"));
}

#[test]
fn file_log_appends_one_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/audit.log");
    let log = FileAuditLog::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let kinds = [
        AuditKind::WorkerRegistered,
        AuditKind::ReportRefused,
        AuditKind::PolicyReload,
    ];
    for (i, kind) in kinds.iter().enumerate() {
        log.record(&AuditEvent::new(*kind, at(i as u64)).detail(format!("event {i}")));
    }
    // Read while the log is open: every event is already in the file.
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.iter().map(|e| e.event).collect::<Vec<_>>(), kinds);
    assert_eq!(events[2].detail.as_deref(), Some("event 2"));
    // Rotation: move the file away, reopen, keep writing.
    std::fs::rename(&path, dir.path().join("old.log")).unwrap();
    log.reopen().unwrap();
    log.record(&AuditEvent::new(AuditKind::Admin, at(9)));
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    // Appends to an existing file.
    drop(log);
    let again = FileAuditLog::open(&path).unwrap();
    again.record(&AuditEvent::new(AuditKind::Admin, at(10)));
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    assert_eq!(again.failures(), 0);
}

#[test]
fn sinks_from_config_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        enabled: None,
        path: Some(dir.path().join("a.log")),
    };
    let sink = open_audit_log(&config).unwrap();
    sink.record(&AuditEvent::new(AuditKind::WorkerLost, at(1)));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    let off = AuditConfig {
        enabled: Some(false),
        path: Some(dir.path().join("b.log")),
    };
    open_audit_log(&off)
        .unwrap()
        .record(&AuditEvent::new(AuditKind::WorkerLost, at(1)));
    assert!(!dir.path().join("b.log").exists());
    let memory = Arc::new(MemoryAuditLog::new());
    let as_sink: Arc<dyn AuditSink> = memory.clone();
    as_sink.record(&AuditEvent::new(AuditKind::WorkerRevoked, at(2)));
    assert_eq!(memory.events().len(), 1);
    assert_eq!(memory.events()[0].event, AuditKind::WorkerRevoked);
}
