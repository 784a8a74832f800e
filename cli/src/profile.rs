//! The AWS shared configuration files: `credentials` and `config`, at their standard paths
//! (`~/.aws/…`) or where `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE` point.
//!
//! Only what this tool uses is read: `aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token` and `region`. A profile's keys in `credentials` (section `[name]`) win
//! over those in `config` (section `[profile name]`, or `[default]`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The settings of one profile, merged from both files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
    pub(crate) region: Option<String>,
}

/// Where the two files are, from the environment.
pub(crate) fn default_paths() -> (Option<PathBuf>, Option<PathBuf>) {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let pick = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    (
        pick("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        pick("AWS_CONFIG_FILE", "config"),
    )
}

/// Loads profile `name`; `Ok(None)` when neither file has it. Missing files are not errors.
pub(crate) fn load(
    name: &str,
    credentials: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<Option<Profile>> {
    let read = |p: Option<&Path>| -> anyhow::Result<Option<String>> {
        match p {
            None => Ok(None),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow::anyhow!("reading {}: {e}", p.display())),
            },
        }
    };
    let config_section = if name == "default" {
        "default".to_owned()
    } else {
        format!("profile {name}")
    };
    let from_creds = read(credentials)?.and_then(|t| parse_ini(&t).remove(name));
    let from_config = read(config)?.and_then(|t| parse_ini(&t).remove(&config_section));
    if from_creds.is_none() && from_config.is_none() {
        return Ok(None);
    }
    let get = |k: &str| {
        from_creds
            .as_ref()
            .and_then(|m| m.get(k))
            .or_else(|| from_config.as_ref().and_then(|m| m.get(k)))
            .cloned()
    };
    Ok(Some(Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: get("region"),
    }))
}

/// Sections of an INI file, each a map of lower-cased keys to values.
fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, line.split_once('=')) else {
            continue;
        };
        // Indented lines continue a nested block (`s3 =` sub-settings): not used here.
        let value = v.trim();
        let value = value
            .split_once(" #")
            .or_else(|| value.split_once(" ;"))
            .map_or(value, |(v, _)| v.trim_end());
        if let Some(map) = sections.get_mut(section) {
            map.insert(k.trim().to_ascii_lowercase(), value.to_owned());
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "\
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secretdefault

[work]
aws_access_key_id=AKIDWORK
aws_secret_access_key=secret/work+key   ; trailing comment
aws_session_token = tokenwork
";

    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile work]
region = ap-southeast-2
aws_access_key_id = IGNORED-credentials-file-wins

[profile only-config]
aws_access_key_id = AKIDCONFIG
aws_secret_access_key = secretconfig
region=us-west-2
";

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("credentials");
        let f = dir.path().join("config");
        std::fs::write(&c, CREDENTIALS).unwrap();
        std::fs::write(&f, CONFIG).unwrap();
        (dir, c, f)
    }

    #[test]
    fn merges_credentials_and_config() {
        let (_d, c, f) = files();
        let work = load("work", Some(&c), Some(&f)).unwrap().unwrap();
        assert_eq!(
            work,
            Profile {
                access_key_id: Some("AKIDWORK".into()),
                secret_access_key: Some("secret/work+key".into()),
                session_token: Some("tokenwork".into()),
                region: Some("ap-southeast-2".into()),
            }
        );
        let default = load("default", Some(&c), Some(&f)).unwrap().unwrap();
        assert_eq!(default.access_key_id.as_deref(), Some("AKIDDEFAULT"));
        assert_eq!(default.region.as_deref(), Some("eu-west-1"));
        let only = load("only-config", Some(&c), Some(&f)).unwrap().unwrap();
        assert_eq!(only.secret_access_key.as_deref(), Some("secretconfig"));
        assert_eq!(only.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn unknown_profiles_and_missing_files() {
        let (d, c, f) = files();
        assert_eq!(load("nope", Some(&c), Some(&f)).unwrap(), None);
        let missing = d.path().join("absent");
        assert_eq!(
            load("default", Some(&missing), Some(&missing)).unwrap(),
            None
        );
        assert_eq!(load("default", None, None).unwrap(), None);
    }
}
