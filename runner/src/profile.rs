//! Sandbox profiles: which system calls the seccomp filter refuses, whether
//! Landlock confines writes, and which host directories form a host rootfs.
//!
//! Profiles are TOML files in `sandbox-profiles/`. The default one is built
//! into the binary; any other profile only states what it changes, every
//! field it leaves out keeps the default's value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::syscalls;

/// The default profile, embedded so that the runner works without any file.
pub const DEFAULT_PROFILE: &str = include_str!("../../sandbox-profiles/default.toml");

/// A parsed, complete profile (every field has a value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Where it came from, for messages.
    pub source: String,
    /// Refuse clone/unshare with CLONE_NEWUSER.
    pub deny_new_user_namespaces: bool,
    /// System calls that fail with EPERM.
    pub deny: Vec<String>,
    /// System calls that fail with ENOSYS.
    pub enosys: Vec<String>,
    /// Whether Landlock confines writes.
    pub landlock: bool,
    /// Extra writable paths inside the sandbox.
    pub extra_writable: Vec<PathBuf>,
    /// Host directories that form a host rootfs.
    pub host_dirs: Vec<PathBuf>,
}

/// The file format. Every field is optional; absent fields inherit the default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    /// The seccomp filter.
    seccomp: Option<SeccompSection>,
    /// The Landlock ruleset.
    landlock: Option<LandlockSection>,
    /// The host rootfs.
    host: Option<HostSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeccompSection {
    /// Refuse clone/unshare with CLONE_NEWUSER.
    deny_new_user_namespaces: Option<bool>,
    /// Call name → reason; these fail with EPERM.
    deny: Option<BTreeMap<String, String>>,
    /// Call name → reason; these fail with ENOSYS.
    enosys: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LandlockSection {
    /// Confine writes with Landlock.
    enabled: Option<bool>,
    /// More absolute paths inside the sandbox that may be written.
    extra_writable: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSection {
    /// Host directories mounted read-only for a host rootfs.
    dirs: Option<Vec<PathBuf>>,
}

impl Profile {
    /// The built-in default profile (parsed once per process).
    pub fn default_profile() -> Result<Profile> {
        static PARSED: std::sync::OnceLock<std::result::Result<Profile, String>> =
            std::sync::OnceLock::new();
        PARSED
            .get_or_init(|| {
                Self::parse("default", DEFAULT_PROFILE, None).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|message| Error::Profile {
                path: "default".into(),
                message,
            })
    }

    /// Finds a profile: "" or "default" is the built-in one, an absolute or
    /// relative path (containing `/` or ending in `.toml`) is read as is, any
    /// other name is `<profile_dir>/<name>.toml`.
    pub fn load(name: &str, profile_dir: Option<&Path>) -> Result<Profile> {
        if name.is_empty() || name == "default" {
            return Self::default_profile();
        }
        let path = if name.contains('/') || name.ends_with(".toml") {
            PathBuf::from(name)
        } else {
            let dir = profile_dir.ok_or_else(|| Error::Profile {
                path: name.to_string(),
                message: "no profile directory is configured; give a path to the profile file"
                    .into(),
            })?;
            dir.join(format!("{name}.toml"))
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Profile {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(
            &path.display().to_string(),
            &text,
            Some(Self::default_profile()?),
        )
    }

    /// Parses profile text; fields it leaves out come from `base` (the default
    /// profile) or, when parsing the default itself, must be present.
    pub fn parse(source: &str, text: &str, base: Option<Profile>) -> Result<Profile> {
        let err = |message: String| Error::Profile {
            path: source.to_string(),
            message,
        };
        let file: ProfileFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let seccomp = file.seccomp.unwrap_or_default();
        let landlock = file.landlock.unwrap_or_default();
        let host = file.host.unwrap_or_default();
        let missing = |field: &str| err(format!("missing field {field}"));
        let profile = match base {
            Some(base) => Profile {
                source: source.to_string(),
                deny_new_user_namespaces: seccomp
                    .deny_new_user_namespaces
                    .unwrap_or(base.deny_new_user_namespaces),
                deny: seccomp
                    .deny
                    .map(|m| m.into_keys().collect())
                    .unwrap_or(base.deny),
                enosys: seccomp
                    .enosys
                    .map(|m| m.into_keys().collect())
                    .unwrap_or(base.enosys),
                landlock: landlock.enabled.unwrap_or(base.landlock),
                extra_writable: landlock.extra_writable.unwrap_or(base.extra_writable),
                host_dirs: host.dirs.unwrap_or(base.host_dirs),
            },
            None => Profile {
                source: source.to_string(),
                deny_new_user_namespaces: seccomp
                    .deny_new_user_namespaces
                    .ok_or_else(|| missing("seccomp.deny_new_user_namespaces"))?,
                deny: seccomp
                    .deny
                    .ok_or_else(|| missing("seccomp.deny"))?
                    .into_keys()
                    .collect(),
                enosys: seccomp
                    .enosys
                    .ok_or_else(|| missing("seccomp.enosys"))?
                    .into_keys()
                    .collect(),
                landlock: landlock
                    .enabled
                    .ok_or_else(|| missing("landlock.enabled"))?,
                extra_writable: landlock.extra_writable.unwrap_or_default(),
                host_dirs: host.dirs.ok_or_else(|| missing("host.dirs"))?,
            },
        };
        for name in profile.deny.iter().chain(&profile.enosys) {
            if syscalls::number(name).is_none() {
                return Err(err(format!("unknown system call {name:?}")));
            }
        }
        for path in profile.extra_writable.iter().chain(&profile.host_dirs) {
            if !path.is_absolute() {
                return Err(err(format!("path {} must be absolute", path.display())));
            }
        }
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_parses_and_denies_the_dangerous_calls() {
        let p = Profile::default_profile().unwrap();
        for call in [
            "mount",
            "bpf",
            "keyctl",
            "init_module",
            "kexec_load",
            "setns",
        ] {
            assert!(p.deny.iter().any(|d| d == call), "{call} not denied");
        }
        assert_eq!(p.enosys, vec!["clone3".to_string()]);
        assert!(p.deny_new_user_namespaces && p.landlock);
        assert!(p.host_dirs.contains(&PathBuf::from("/usr")));
    }

    #[test]
    fn custom_profile_inherits_what_it_leaves_out() {
        let base = Profile::default_profile().unwrap();
        let p = Profile::parse("t", "[landlock]\nenabled = false\n", Some(base.clone())).unwrap();
        assert!(!p.landlock);
        assert_eq!(p.deny, base.deny);
    }

    #[test]
    fn bad_profiles_name_what_is_wrong() {
        let base = Profile::default_profile().unwrap();
        let e = Profile::parse(
            "x.toml",
            "[seccomp.deny]\nfrobnicate = \"?\"\n",
            Some(base.clone()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml") && e.contains("frobnicate"), "{e}");
        let e = Profile::parse("y.toml", "[landlok]\n", Some(base.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.toml") && e.contains("landlok"), "{e}");
        let e = Profile::load("/nonexistent/p.toml", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/p.toml"), "{e}");
    }
}
