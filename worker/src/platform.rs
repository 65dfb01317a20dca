//! Reading an action's platform properties the way the scheduler matches
//! them: the Action's platform when it names any property, else the
//! Command's (Bazel 4 and other REAPI 2.0 clients send only the latter).

use corral_proto::reapi;

use crate::error::{Error, Result};

/// The value of platform property `name`.
// `Command.platform` is deprecated in REAPI 2.2 but still what older clients send.
#[allow(deprecated)]
pub fn property<'a>(
    action: &'a reapi::Action,
    command: &'a reapi::Command,
    name: &str,
) -> Option<&'a str> {
    let platform = action
        .platform
        .as_ref()
        .filter(|p| !p.properties.is_empty())
        .or(command.platform.as_ref())?;
    platform
        .properties
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

/// uid or gid asked for with BuildStream's `unixUID`/`unixGID` (0 when
/// absent), or an error naming the property.
pub fn id_property(action: &reapi::Action, command: &reapi::Command, name: &str) -> Result<u32> {
    match property(action, command, name) {
        None | Some("") => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            Error::invalid(
                format!("platform property {name}"),
                format!("{v:?} is not a uid/gid number"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    #[allow(deprecated)]
    fn action_platform_first_unless_empty() {
        let command = reapi::Command {
            platform: platform(&[("unixUID", "7")]),
            ..Default::default()
        };
        let mut action = reapi::Action {
            platform: platform(&[]),
            ..Default::default()
        };
        assert_eq!(id_property(&action, &command, "unixUID").unwrap(), 7);
        action.platform = platform(&[("unixUID", "9")]);
        assert_eq!(id_property(&action, &command, "unixUID").unwrap(), 9);
        action.platform = platform(&[("unixUID", "root")]);
        let e = id_property(&action, &command, "unixUID").unwrap_err();
        assert!(e.to_string().contains("platform property unixUID"), "{e}");
    }
}
