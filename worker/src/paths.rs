//! Output paths as REAPI gives them: relative to the working directory,
//! possibly with `.` and `..` (BuildStream sends both), turned into
//! components relative to the input root. A path that climbs above the
//! input root is refused: outputs never leave the build directory.

use crate::error::{Error, Result};

/// Resolves `path` (relative to `working_directory`) into components below
/// the input root; an empty list is the input root itself. `field` names
/// the request field in errors.
pub fn resolve(working_directory: &str, path: &str, field: &str) -> Result<Vec<String>> {
    if path.starts_with('/') {
        return Err(Error::invalid(field, format!("{path:?} is absolute")));
    }
    if path.contains('\0') || working_directory.contains('\0') {
        return Err(Error::invalid(field, format!("{path:?} contains NUL")));
    }
    if working_directory.starts_with('/') {
        return Err(Error::invalid(
            "working_directory",
            format!("{working_directory:?} is absolute"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for comp in working_directory.split('/').chain(path.split('/')) {
        match comp {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(Error::invalid(
                        field,
                        format!("{path:?} (from working directory {working_directory:?}) leaves the input root"),
                    ));
                }
            }
            name => out.push(name.to_string()),
        }
    }
    Ok(out)
}

/// The working directory's components (it may not climb out either).
pub fn working_directory(working_directory: &str) -> Result<Vec<String>> {
    resolve(working_directory, "", "working_directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_resolve_against_the_working_directory() {
        assert_eq!(resolve("a/b", "c", "p").unwrap(), ["a", "b", "c"]);
        assert_eq!(resolve("a/b", "../c/./d", "p").unwrap(), ["a", "c", "d"]);
        assert_eq!(resolve("a", "..", "p").unwrap(), Vec::<String>::new());
        assert_eq!(resolve("", ".", "p").unwrap(), Vec::<String>::new());
        assert_eq!(
            resolve("buildstream/build", "../../.", "p").unwrap(),
            Vec::<String>::new()
        );
        let e = resolve("a", "../..", "output_paths")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output_paths") && e.contains("leaves the input root"),
            "{e}"
        );
        assert!(resolve("", "/etc", "output_files")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(resolve("/x", "a", "output_files").is_err());
    }
}
