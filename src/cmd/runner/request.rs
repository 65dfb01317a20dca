//! A runner-protocol `RunRequest` as `runner exec` options: the run plan
//! (`corral_worker::plan`) makes the request a worker would send its
//! runner, and `runner exec --action` runs that same request here, with
//! this process's stdout and stderr and stdin `/dev/null`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use corral_proto::runner::v1 as pb;
use corral_runner::exec::{ExecOptions, ExecRoot};
use corral_runner::Limits;

/// The options that run `request` as the runner would; `stats` as
/// `--stats` says.
pub fn exec_options(request: &pb::RunRequest, stats: bool) -> anyhow::Result<ExecOptions> {
    use pb::run_request::Rootfs;
    let input = PathBuf::from(&request.input_root);
    let root = match &request.rootfs {
        Some(Rootfs::InputRootAsRoot(_)) => ExecRoot::Dir(input.clone()),
        Some(Rootfs::Host(_)) => ExecRoot::Host,
        Some(Rootfs::Lower(lower)) => {
            ExecRoot::Lower(lower.dirs.iter().map(PathBuf::from).collect())
        }
        None => bail!("the run request names no rootfs"),
    };
    let limits = request.limits.unwrap_or_default();
    let nonzero = |v: u64| (v > 0).then_some(v);
    Ok(ExecOptions {
        root,
        input: Some(input),
        cwd: request.working_directory.clone(),
        env: request
            .environment
            .iter()
            .map(|v| format!("{}={}", v.name, v.value))
            .collect(),
        network: request.network,
        profile: request.profile.clone(),
        limits: Limits {
            timeout: nonzero(limits.timeout_ms).map(Duration::from_millis),
            memory_bytes: nonzero(limits.memory_bytes),
            max_pids: nonzero(limits.max_pids),
            cpu_millis: nonzero(limits.cpu_millis),
            max_written_bytes: nonzero(limits.max_written_bytes),
        },
        uid: request.uid,
        gid: request.gid,
        shell: false,
        keep: false,
        stats,
        read_only: request.read_only_subtrees.clone(),
        writable: request.writable_subtrees.clone(),
        command: request.arguments.clone(),
        exact_env: true,
        null_stdin: true,
        scratch_dir: Some(PathBuf::from(&request.scratch_dir)),
        hostname: (!request.hostname.is_empty()).then(|| request.hostname.clone()),
        give_directories: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_the_request_is_carried_over() {
        let request = pb::RunRequest {
            input_root: "/cache/trees/abc".into(),
            scratch_dir: "/tmp/corral-exec-1".into(),
            rootfs: Some(pb::run_request::Rootfs::Lower(pb::LowerDirs {
                dirs: vec!["/l/1".into(), "/l/2".into()],
            })),
            arguments: vec!["make".into(), "all".into()],
            environment: vec![pb::EnvironmentVariable {
                name: "PATH".into(),
                value: "/bin".into(),
            }],
            working_directory: "src".into(),
            stdout_path: String::new(),
            stderr_path: String::new(),
            profile: "strict".into(),
            network: false,
            limits: Some(pb::Limits {
                timeout_ms: 1500,
                memory_bytes: 1 << 20,
                ..Default::default()
            }),
            uid: 1000,
            gid: 100,
            read_only_subtrees: vec!["ro".into()],
            writable_subtrees: vec!["ro/rw".into()],
            hostname: "buildbox".into(),
        };
        let o = exec_options(&request, true).unwrap();
        assert!(
            matches!(&o.root, ExecRoot::Lower(d) if d == &[PathBuf::from("/l/1"), PathBuf::from("/l/2")])
        );
        assert_eq!(
            o.input.as_deref(),
            Some(std::path::Path::new("/cache/trees/abc"))
        );
        assert_eq!(o.cwd, "src");
        assert_eq!(o.env, ["PATH=/bin"]);
        assert_eq!(o.profile, "strict");
        assert_eq!(o.limits.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(o.limits.memory_bytes, Some(1 << 20));
        assert_eq!(o.limits.max_pids, None);
        assert_eq!((o.uid, o.gid), (1000, 100));
        assert_eq!(o.read_only, ["ro"]);
        assert_eq!(o.writable, ["ro/rw"]);
        assert_eq!(o.command, ["make", "all"]);
        assert!(o.exact_env && o.null_stdin && o.stats && !o.shell);
        assert_eq!(
            o.scratch_dir.as_deref(),
            Some(std::path::Path::new("/tmp/corral-exec-1"))
        );
        assert_eq!(o.hostname.as_deref(), Some("buildbox"));

        let plain = pb::RunRequest {
            rootfs: Some(pb::run_request::Rootfs::InputRootAsRoot(
                pb::InputRootAsRoot {},
            )),
            input_root: "/in".into(),
            ..Default::default()
        };
        let o = exec_options(&plain, false).unwrap();
        assert!(matches!(&o.root, ExecRoot::Dir(d) if d == std::path::Path::new("/in")));
        assert_eq!(o.hostname, None);
        assert_eq!(o.limits, Limits::default());
        assert!(exec_options(&pb::RunRequest::default(), false).is_err());
    }
}
