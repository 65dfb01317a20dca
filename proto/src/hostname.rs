//! The rule for a sandbox hostname, shared by the scheduler (which checks
//! its configuration when it loads) and the runner (which checks every
//! request): both sides of the `hostname` fields of the protocols agree.

/// The hostname a sandbox gets when none is asked for.
pub const DEFAULT: &str = "corral";

/// Checks a hostname the kernel and every resolver accept: 1 to 64 bytes of
/// ASCII letters, digits, `-` and `.`, not starting with `-` or `.`. The
/// error says what is wrong with it.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("must be 1 to 64 bytes long, not {}", name.len()));
    }
    if name.starts_with(['-', '.']) {
        return Err("must not start with '-' or '.'".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        Some(c) => Err(format!("{c:?} is not a letter, digit, '-' or '.'")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_plain_names_and_refuses_the_rest() {
        for good in ["buildbox", "corral", "builder-1.example", &"a".repeat(64)] {
            assert!(check(good).is_ok(), "{good:?}");
        }
        for bad in ["", "-x", ".x", "has space", "a/b", "é", &"a".repeat(65)] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
