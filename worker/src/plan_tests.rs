use super::*;

fn platform(pairs: &[(&str, &str)]) -> Option<reapi::Platform> {
    Some(reapi::Platform {
        properties: pairs
            .iter()
            .map(|(n, v)| reapi::platform::Property {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
    })
}

fn assignment(pairs: &[(&str, &str)], rootfs: RootfsMode) -> Assignment {
    Assignment {
        action: Some(reapi::Action {
            platform: platform(pairs),
            ..Default::default()
        }),
        command: Some(reapi::Command {
            arguments: vec!["sh".into(), "-c".into(), "true".into()],
            environment_variables: vec![reapi::command::EnvironmentVariable {
                name: "PATH".into(),
                value: "/mine".into(),
            }],
            working_directory: "src".into(),
            ..Default::default()
        }),
        timeout_millis: 60_000,
        rootfs: rootfs as i32,
        hostname: "buildbox".into(),
        ..Default::default()
    }
}

fn site() -> RunSite {
    RunSite {
        input_root: "/data/trees/abc".into(),
        scratch_dir: "/data/builds/x/scratch".into(),
        stdout: Some("/data/builds/x/stdout".into()),
        stderr: Some("/data/builds/x/stderr".into()),
        read_only_subtrees: vec!["ro".into()],
        writable_subtrees: vec!["ro/rw".into()],
        ..Default::default()
    }
}

#[test]
fn an_assignment_gives_the_schedulers_choices_and_the_actions_ids() {
    let a = assignment(
        &[("unixUID", "1000"), ("unixGID", "100")],
        RootfsMode::InputRoot,
    );
    let plan = RunPlan::for_assignment(&a, "strict").unwrap();
    assert_eq!(plan.rootfs, PlannedRootfs::InputRoot);
    assert_eq!(plan.hostname, "buildbox");
    assert_eq!(plan.limits.timeout_ms, 60_000);
    assert_eq!((plan.uid, plan.gid), (1000, 100));
    assert_eq!(plan.profile, "strict");

    let request = plan.request(a.command.as_ref().unwrap(), &site()).unwrap();
    assert_eq!(
        request.rootfs,
        Some(pb::run_request::Rootfs::InputRootAsRoot(
            pb::InputRootAsRoot {}
        ))
    );
    assert_eq!(request.working_directory, "src");
    assert_eq!(request.input_root, "/data/trees/abc");
    assert_eq!(request.stdout_path, "/data/builds/x/stdout");
    assert_eq!(request.hostname, "buildbox");
    assert_eq!(request.limits.unwrap().timeout_ms, 60_000);
    assert_eq!((request.uid, request.gid), (1000, 100));
    assert_eq!(request.read_only_subtrees, ["ro"]);
    assert_eq!(request.writable_subtrees, ["ro/rw"]);
    assert_eq!(request.profile, "strict");

    let unspecified = assignment(&[], RootfsMode::Unspecified);
    let plan = RunPlan::for_assignment(&unspecified, "").unwrap();
    assert_eq!(plan.rootfs, PlannedRootfs::Host);
}

#[test]
fn an_image_needs_its_layers_and_fills_in_the_environment() {
    let a = assignment(
        &[("container-image", "registry.example/tools:1")],
        RootfsMode::InputRoot,
    );
    let mut plan = RunPlan::for_assignment(&a, "").unwrap();
    assert_eq!(plan.image_to_pull(), Some("registry.example/tools:1"));
    let command = a.command.as_ref().unwrap();
    let e = plan.request(command, &site()).unwrap_err();
    assert!(e.to_string().contains("was not pulled"), "{e}");

    plan.pin_image(ResolvedImage {
        requested: "registry.example/tools:1".into(),
        reference: "registry.example/tools@sha256:aa".into(),
        digest: "sha256:aa".into(),
        manifest_digest: "sha256:bb".into(),
    });
    assert_eq!(
        plan.image_to_pull(),
        Some("registry.example/tools@sha256:aa")
    );
    let with_layers = RunSite {
        layer_dirs: vec!["/l/1".into(), "/l/2".into()],
        image_env: vec!["PATH=/image".into(), "LANG=C.UTF-8".into()],
        ..site()
    };
    let request = plan.request(command, &with_layers).unwrap();
    assert_eq!(
        request.rootfs,
        Some(pb::run_request::Rootfs::Lower(pb::LowerDirs {
            dirs: vec!["/l/1".into(), "/l/2".into()]
        }))
    );
    let env: Vec<(String, String)> = request
        .environment
        .into_iter()
        .map(|v| (v.name, v.value))
        .collect();
    assert_eq!(
        env,
        [
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("PATH".to_string(), "/mine".to_string())
        ]
    );
}

#[test]
fn a_record_gives_back_the_plan_it_was_made_from() {
    let mut plans = Vec::new();
    for (pairs, mode) in [
        (&[][..], RootfsMode::InputRoot),
        (&[("unixUID", "7")][..], RootfsMode::Host),
        (
            &[("container-image", "registry.example/tools:1")][..],
            RootfsMode::Host,
        ),
    ] {
        plans.push(RunPlan::for_assignment(&assignment(pairs, mode), "p").unwrap());
    }
    plans[2].pin_image(ResolvedImage {
        requested: "registry.example/tools:1".into(),
        reference: "registry.example/tools@sha256:aa".into(),
        digest: "sha256:aa".into(),
        manifest_digest: "sha256:aa".into(),
    });
    plans[1].limits.memory_bytes = 1 << 30;
    plans[1].network = true;
    for plan in plans {
        let record = plan.record();
        assert_eq!(RunPlan::from_record(&record).unwrap(), plan);
    }
}

#[test]
fn a_record_without_the_image_that_ran_is_refused() {
    let record = wire::RunPlan {
        image: Some(ResolvedImage {
            requested: "x:1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = RunPlan::from_record(&record).unwrap_err();
    assert!(e.to_string().contains("image.reference"), "{e}");
}

#[test]
fn a_plan_reads_as_one_line() {
    let plan = RunPlan::for_assignment(&assignment(&[("unixUID", "5")], RootfsMode::InputRoot), "")
        .unwrap();
    assert_eq!(
        plan.to_string(),
        "rootfs input-root, hostname buildbox, timeout 60 s, uid 5 gid 0"
    );
}

#[test]
fn a_malformed_assignment_names_the_field() {
    let mut a = assignment(&[], RootfsMode::Host);
    a.command = None;
    let e = RunPlan::for_assignment(&a, "").unwrap_err();
    assert!(e.to_string().starts_with("command:"), "{e}");
    let mut a = assignment(&[("unixGID", "staff")], RootfsMode::Host);
    let e = RunPlan::for_assignment(&a, "").unwrap_err();
    assert!(e.to_string().contains("unixGID"), "{e}");
    a = assignment(&[], RootfsMode::Host);
    a.command.as_mut().unwrap().arguments.clear();
    let plan = RunPlan::for_assignment(&a, "").unwrap();
    let e = plan
        .request(a.command.as_ref().unwrap(), &site())
        .unwrap_err();
    assert!(e.to_string().contains("command.arguments"), "{e}");
}
