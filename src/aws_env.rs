//! The AWS conventions for settings not given in code: environment variables
//! (`AWS_ENDPOINT_URL_S3`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, …) and the shared
//! `credentials` and `config` files, at `~/.aws/…` or where `AWS_SHARED_CREDENTIALS_FILE` /
//! `AWS_CONFIG_FILE` point.
//!
//! [`ClientBuilder::aws_settings`](crate::ClientBuilder::aws_settings) applies them, as the AWS CLI
//! does. Of the shared files only `aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token` and `region` are read; a profile's keys in `credentials` (section
//! `[name]`) win over those in `config` (section `[profile name]`, or `[default]`). Every problem
//! is a [`ConfigError`] naming the setting at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{Addressing, ClientBuilder};
use crate::error::ConfigError;

/// The settings of one profile, merged from both files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Profile {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
    ca_bundle: Option<String>,
}

/// What the environment holds, read once (from the process, or given by a test).
#[derive(Debug, Default, Clone)]
pub struct AwsEnv {
    vars: HashMap<String, String>,
}

impl AwsEnv {
    /// The process's environment variables.
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// These variables only (`HOME` among them, if the shared files are to be found at `~/.aws`).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        AwsEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Variable `name`, unless unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Where the shared credentials and config files are.
    fn shared_paths(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        let home = self.get("HOME").map(PathBuf::from);
        let pick = |var: &str, name: &str| {
            self.get(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
        };
        (
            pick("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            pick("AWS_CONFIG_FILE", "config"),
        )
    }
}

/// Settings given in code (or on a command line); what is `None` comes from [`AwsEnv`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// The endpoint. Default: `$AWS_ENDPOINT_URL_S3`, then `$AWS_ENDPOINT_URL`, then AWS's.
    pub endpoint_url: Option<String>,
    /// The region. Default: `$AWS_REGION`, `$AWS_DEFAULT_REGION`, the profile's, then
    /// `us-east-1`.
    pub region: Option<String>,
    /// The shared-config profile. Default: `$AWS_PROFILE`, then `default`. Given here, its keys
    /// win over `AWS_ACCESS_KEY_ID`; otherwise those variables win over the profile.
    pub profile: Option<String>,
    /// Send requests unsigned (public buckets); no credentials are looked for.
    pub anonymous: bool,
    /// Path-style requests. `None`: the endpoint decides (see [`ClientBuilder::addressing`]).
    pub path_style: Option<bool>,
    /// A PEM bundle of CA certificates to trust besides the usual roots. Default:
    /// `$AWS_CA_BUNDLE`, then the profile's `ca_bundle`.
    pub ca_bundle: Option<PathBuf>,
}

/// One resolution of [`AwsSettings`] against an [`AwsEnv`]: the profile to read settings from,
/// loaded at most once, when a setting needs it.
pub(crate) struct Resolution<'a> {
    pub(crate) settings: &'a AwsSettings,
    pub(crate) env: &'a AwsEnv,
    /// The profile given in the settings or by `AWS_PROFILE`, if any.
    pub(crate) named: Option<String>,
    paths: (Option<PathBuf>, Option<PathBuf>),
    loaded: std::cell::OnceCell<Option<Profile>>,
}

impl<'a> Resolution<'a> {
    pub(crate) fn new(settings: &'a AwsSettings, env: &'a AwsEnv) -> Self {
        let named = settings
            .profile
            .clone()
            .or_else(|| env.get("AWS_PROFILE").map(str::to_owned));
        Resolution {
            settings,
            env,
            named,
            paths: env.shared_paths(),
            loaded: std::cell::OnceCell::new(),
        }
    }

    /// The profile's name: the one named, else `default`.
    pub(crate) fn profile_name(&self) -> &str {
        self.named.as_deref().unwrap_or("default")
    }

    fn profile(&self) -> Result<Option<&Profile>, ConfigError> {
        if self.loaded.get().is_none() {
            let (creds, config) = &self.paths;
            let p = load(self.profile_name(), creds.as_deref(), config.as_deref())?;
            let _ = self.loaded.set(p);
        }
        Ok(self.loaded.get().and_then(Option::as_ref))
    }

    /// Fails for a named profile that neither shared file has.
    pub(crate) fn require_named_profile(&self) -> Result<(), ConfigError> {
        match (&self.named, self.profile()?) {
            (Some(name), None) => Err(ConfigError::new(
                "profile",
                format!("{name:?} is not in the shared credentials or config file"),
            )),
            _ => Ok(()),
        }
    }

    /// The endpoint and addressing the settings and the variables give.
    pub(crate) fn apply_endpoint(&self, mut b: ClientBuilder) -> ClientBuilder {
        if let Some(url) = self
            .settings
            .endpoint_url
            .as_deref()
            .or_else(|| self.env.get("AWS_ENDPOINT_URL_S3"))
            .or_else(|| self.env.get("AWS_ENDPOINT_URL"))
        {
            b = b.endpoint_url(url);
        }
        match self.settings.path_style {
            Some(true) => b.addressing(Addressing::PathStyle),
            Some(false) => b.addressing(Addressing::VirtualHosted),
            None => b,
        }
    }

    /// The CA bundle: the settings', `AWS_CA_BUNDLE`, then the profile's `ca_bundle`.
    pub(crate) fn apply_ca_bundle(
        &self,
        mut b: ClientBuilder,
    ) -> Result<ClientBuilder, ConfigError> {
        let bundle = match (&self.settings.ca_bundle, self.env.get("AWS_CA_BUNDLE")) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(path)) => Some(PathBuf::from(path)),
            (None, None) => self
                .profile()?
                .and_then(|p| p.ca_bundle.as_ref().map(PathBuf::from)),
        };
        if let Some(path) = bundle {
            b = b.ca_bundle_file(path);
        }
        // `env` has had its say on AWS_CA_BUNDLE; build() must not read the process's.
        b.tls.bundle_from_env = false;
        Ok(b)
    }

    /// The proxies `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` name (or their lower-case forms,
    /// as curl reads them).
    pub(crate) fn apply_proxy(&self, mut b: ClientBuilder) -> ClientBuilder {
        let var = |upper: &str| {
            self.env
                .get(upper)
                .or_else(|| self.env.get(&upper.to_ascii_lowercase()))
        };
        if let Some(url) = var("HTTPS_PROXY") {
            b = b.https_proxy(url);
        }
        if let Some(url) = var("HTTP_PROXY") {
            b = b.http_proxy(url);
        }
        if let Some(rules) = var("NO_PROXY") {
            b = b.no_proxy(rules);
        }
        b
    }

    /// The region from the settings or the variables (`AWS_REGION`, `AWS_DEFAULT_REGION`).
    pub(crate) fn given_region(&self) -> Option<String> {
        self.settings
            .region
            .clone()
            .or_else(|| self.env.get("AWS_REGION").map(str::to_owned))
            .or_else(|| self.env.get("AWS_DEFAULT_REGION").map(str::to_owned))
    }
}

impl ClientBuilder {
    /// Applies `settings`, and for what they leave out the AWS conventions read from `env`:
    /// the endpoint, the region, credentials from `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` or from a profile of the shared files, a
    /// CA bundle from `AWS_CA_BUNDLE` or the profile's `ca_bundle`, and proxies from
    /// `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
    ///
    /// Only static keys are found this way. For the whole AWS default chain (roles, web
    /// identity, `credential_process`, SSO, container credentials, the instance's metadata),
    /// turn on the `aws-config` feature and use `aws_default_chain`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] (field `"profile"` or `"credentials"`) when a named profile does not
    /// exist, when no credentials are found and `anonymous` is off, or when a shared file cannot
    /// be read.
    pub fn aws_settings(
        mut self,
        settings: &AwsSettings,
        env: &AwsEnv,
    ) -> Result<Self, ConfigError> {
        let r = Resolution::new(settings, env);
        self = r.apply_endpoint(self);
        self = r.apply_proxy(self);

        // Credentials: anonymous; an explicit profile; the environment variables; then the
        // profile from AWS_PROFILE or "default". The profile's region counts when it supplied
        // the keys, or when a profile was named.
        let env_keys = match (
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        let name = r.profile_name();
        if settings.anonymous {
            self = self.anonymous();
        } else if let (Some((id, secret)), None) = (env_keys, &settings.profile) {
            let token = env.get("AWS_SESSION_TOKEN").map(str::to_owned);
            self = self.static_credentials(id, secret, token);
        } else {
            const REMEDY: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, add keys to \
                 ~/.aws/credentials, name a profile, or send requests unsigned for a public bucket";
            r.require_named_profile()?;
            let Some(p) = r.profile()? else {
                return Err(ConfigError::new(
                    "credentials",
                    format!("none found: {REMEDY}"),
                ));
            };
            let (Some(id), Some(secret)) = (&p.access_key_id, &p.secret_access_key) else {
                return Err(ConfigError::new(
                    "credentials",
                    format!(
                        "profile {name:?} has no aws_access_key_id and aws_secret_access_key: {REMEDY}"
                    ),
                ));
            };
            self = self.static_credentials(id, secret, p.session_token.clone());
        }
        let keys_from_profile =
            !settings.anonymous && (env_keys.is_none() || settings.profile.is_some());
        let profile_region = if keys_from_profile || r.named.is_some() {
            r.profile()?.and_then(|p| p.region.clone())
        } else {
            None
        };
        self = r.apply_ca_bundle(self)?;
        if let Some(region) = r.given_region().or(profile_region) {
            self = self.region(region);
        }
        Ok(self)
    }
}

/// Loads profile `name`; `Ok(None)` when neither file has it. Missing files are not errors.
fn load(
    name: &str,
    credentials: Option<&Path>,
    config: Option<&Path>,
) -> Result<Option<Profile>, ConfigError> {
    let read = |p: Option<&Path>| -> Result<Option<String>, ConfigError> {
        match p {
            None => Ok(None),
            Some(p) => match std::fs::read_to_string(p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ConfigError::new(
                    "profile",
                    format!("reading {}: {e}", p.display()),
                )),
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
        ca_bundle: get("ca_bundle"),
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
                ca_bundle: None,
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

    fn env(dir: &std::path::Path, vars: &[(&str, &str)]) -> AwsEnv {
        let mut all = vec![
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                dir.join("credentials").display().to_string(),
            ),
            (
                "AWS_CONFIG_FILE".to_owned(),
                dir.join("config").display().to_string(),
            ),
        ];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        AwsEnv::from_vars(all)
    }

    /// The access key the builder would sign with, or `None` when unsigned.
    fn key_id(b: &ClientBuilder) -> Option<String> {
        use aws_credential_types::provider::ProvideCredentials;
        match &b.credentials {
            crate::config::CredentialSource::Provider(p) => {
                let c = futures::executor::block_on(p.provide_credentials()).unwrap();
                Some(c.access_key_id().to_owned())
            }
            crate::config::CredentialSource::Anonymous => None,
            crate::config::CredentialSource::Environment => Some("<from env at build>".into()),
        }
    }

    fn apply(settings: AwsSettings, env: &AwsEnv) -> Result<ClientBuilder, ConfigError> {
        ClientBuilder::default().aws_settings(&settings, env)
    }

    #[test]
    fn environment_keys_win_unless_a_profile_is_named() {
        let (d, _c, _f) = files();
        let vars = [
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "secretenv"),
            ("AWS_PROFILE", "work"),
            ("AWS_ENDPOINT_URL", "http://generic:1"),
            ("AWS_ENDPOINT_URL_S3", "http://s3-specific:2"),
        ];
        let e = env(d.path(), &vars);
        let b = apply(AwsSettings::default(), &e).unwrap();
        assert_eq!(key_id(&b).as_deref(), Some("AKIDENV"));
        // The region still comes from the profile AWS_PROFILE names.
        assert_eq!(b.region.as_deref(), Some("ap-southeast-2"));
        assert_eq!(b.endpoint.as_deref(), Some("http://s3-specific:2"));

        let named = AwsSettings {
            profile: Some("only-config".into()),
            region: Some("eu-north-1".into()),
            endpoint_url: Some("http://given:3".into()),
            path_style: Some(true),
            ..AwsSettings::default()
        };
        let b = apply(named, &e).unwrap();
        assert_eq!(key_id(&b).as_deref(), Some("AKIDCONFIG"));
        assert_eq!(b.region.as_deref(), Some("eu-north-1"));
        assert_eq!(b.endpoint.as_deref(), Some("http://given:3"));
        assert_eq!(b.addressing, Some(Addressing::PathStyle));

        // Keys from the environment and no profile named: the default profile's region is
        // not taken (nor are its keys).
        let keys_only = env(
            d.path(),
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ],
        );
        let b = apply(AwsSettings::default(), &keys_only).unwrap();
        assert_eq!(key_id(&b).as_deref(), Some("AKIDENV"));
        assert_eq!(b.region, None);

        let no_env_keys = env(d.path(), &[("AWS_REGION", "sa-east-1")]);
        let b = apply(AwsSettings::default(), &no_env_keys).unwrap();
        assert_eq!(key_id(&b).as_deref(), Some("AKIDDEFAULT"));
        assert_eq!(b.region.as_deref(), Some("sa-east-1"));
    }

    #[test]
    fn missing_profiles_and_credentials_are_config_errors() {
        let (d, _c, _f) = files();
        let e = env(d.path(), &[]);
        let err = apply(
            AwsSettings {
                profile: Some("nope".into()),
                ..AwsSettings::default()
            },
            &e,
        )
        .unwrap_err();
        assert_eq!(err.field(), "profile");
        assert!(err.reason().contains("\"nope\""), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let err = apply(AwsSettings::default(), &env(empty.path(), &[])).unwrap_err();
        assert_eq!(err.field(), "credentials");
        assert!(err.reason().contains("AWS_ACCESS_KEY_ID"), "{err}");

        // Unsigned needs no credentials at all.
        let anon = AwsSettings {
            anonymous: true,
            ..AwsSettings::default()
        };
        let b = apply(anon, &env(empty.path(), &[])).unwrap();
        assert_eq!(key_id(&b), None);
    }

    #[test]
    fn ca_bundle_from_settings_then_variable_then_profile() {
        let (d, _c, f) = files();
        let mut config = std::fs::read_to_string(&f).unwrap();
        config.push_str("\n[profile with-ca]\nca_bundle = /from/profile.pem\n");
        std::fs::write(&f, config).unwrap();
        let bundle = |b: &ClientBuilder| -> Option<PathBuf> {
            assert!(
                !b.tls.bundle_from_env,
                "the process's AWS_CA_BUNDLE must not count"
            );
            match b.tls.bundles.as_slice() {
                [] => None,
                [crate::tls::Bundle::File(p)] => Some(p.clone()),
                other => panic!("unexpected bundles {other:?}"),
            }
        };
        let anon = |profile: Option<&str>, path: Option<&str>| AwsSettings {
            anonymous: true,
            profile: profile.map(str::to_owned),
            ca_bundle: path.map(PathBuf::from),
            ..AwsSettings::default()
        };
        let var = [("AWS_CA_BUNDLE", "/from/variable.pem")];

        let b = apply(
            anon(Some("with-ca"), Some("/given.pem")),
            &env(d.path(), &var),
        )
        .unwrap();
        assert_eq!(bundle(&b), Some(PathBuf::from("/given.pem")));
        let b = apply(anon(Some("with-ca"), None), &env(d.path(), &var)).unwrap();
        assert_eq!(bundle(&b), Some(PathBuf::from("/from/variable.pem")));
        let b = apply(anon(Some("with-ca"), None), &env(d.path(), &[])).unwrap();
        assert_eq!(bundle(&b), Some(PathBuf::from("/from/profile.pem")));
        let b = apply(anon(None, None), &env(d.path(), &[])).unwrap();
        assert_eq!(bundle(&b), None);
    }
}
