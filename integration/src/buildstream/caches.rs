//! BuildStream's artifact and source caches on a Remote Asset server:
//! the `artifacts:` and `source-caches:` blocks of a user configuration.
//!
//! BuildStream 2 finds artifacts and sources through the Remote Asset API
//! (`urn:fdc:buildstream.build:2020:artifact:…` and `…:source:…` URIs)
//! and stores their content in the CAS of the same server, so one URL
//! serves both.

use super::yaml_quote;

/// Which caches a session uses, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheServers {
    /// `http://HOST:PORT` of the server.
    pub url: String,
    /// The instance name, left out of the config when empty.
    pub instance: String,
    /// Use it as the artifact cache.
    pub artifacts: bool,
    /// Use it as the source cache.
    pub sources: bool,
    /// Push to it (not only pull).
    pub push: bool,
}

impl CacheServers {
    /// Artifact and source caches at `url`, pushing.
    pub fn both(url: impl Into<String>, instance: impl Into<String>) -> Self {
        CacheServers {
            url: url.into(),
            instance: instance.into(),
            artifacts: true,
            sources: true,
            push: true,
        }
    }

    /// Only the source cache at `url`, pushing.
    pub fn sources_only(url: impl Into<String>, instance: impl Into<String>) -> Self {
        CacheServers {
            artifacts: false,
            ..Self::both(url, instance)
        }
    }

    /// The YAML blocks, in block style (bst rejects flow style with a
    /// URL inside).
    pub fn yaml(&self) -> String {
        let mut yaml = String::new();
        for (wanted, key) in [
            (self.artifacts, "artifacts"),
            (self.sources, "source-caches"),
        ] {
            if !wanted {
                continue;
            }
            yaml.push_str(&format!(
                "{key}:\n  servers:\n  - url: {}\n    push: {}\n",
                yaml_quote(&self.url),
                self.push
            ));
            if !self.instance.is_empty() {
                yaml.push_str(&format!(
                    "    instance-name: {}\n",
                    yaml_quote(&self.instance)
                ));
            }
        }
        yaml
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_caches_in_block_style() {
        let yaml = CacheServers::both("http://127.0.0.1:9", "buildstream").yaml();
        assert_eq!(
            yaml,
            "artifacts:\n  servers:\n  - url: 'http://127.0.0.1:9'\n    push: true\n    instance-name: 'buildstream'\n\
             source-caches:\n  servers:\n  - url: 'http://127.0.0.1:9'\n    push: true\n    instance-name: 'buildstream'\n"
        );
        let yaml = CacheServers::sources_only("http://h:1", "").yaml();
        assert!(
            !yaml.contains("artifacts") && !yaml.contains("instance-name"),
            "{yaml}"
        );
    }
}
