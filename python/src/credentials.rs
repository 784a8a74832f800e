//! A Python callable as a credentials provider: called (with the GIL, on a blocking thread of
//! the runtime) whenever the client needs credentials, which it caches and refreshes before
//! they expire.
//!
//! The callable takes no arguments and returns a mapping with `access_key_id` and
//! `secret_access_key`, and optionally `token` (or `session_token`) and `expires_at`: an aware
//! `datetime`, or seconds since the epoch. Without `expires_at` the credentials are kept for
//! the client's life. An exception, or a value of another shape, is the error of the requests
//! that needed the credentials (`kind == "credentials"`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;
use pyo3::prelude::*;
use pyo3::types::PyMapping;

/// A Python callable that returns credentials. Shared by an `Arc`, so that handing it to the
/// blocking thread takes no GIL on the runtime's worker (which would stall every request while
/// Python code holds the GIL).
pub(crate) struct PyProvider {
    callable: Arc<Py<PyAny>>,
}

impl PyProvider {
    pub(crate) fn new(callable: Py<PyAny>) -> Self {
        PyProvider {
            callable: Arc::new(callable),
        }
    }
}

impl std::fmt::Debug for PyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyProvider").finish_non_exhaustive()
    }
}

impl ProvideCredentials for PyProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let callable = Arc::clone(&self.callable);
        future::ProvideCredentials::new(async move {
            let call = tokio::task::spawn_blocking(move || {
                Python::with_gil(|py| call_provider(py, &callable))
            });
            match call.await {
                Ok(result) => result.map_err(CredentialsError::provider_error),
                Err(e) => Err(CredentialsError::provider_error(format!(
                    "the credential_provider call did not finish: {e}"
                ))),
            }
        })
    }
}

/// Calls the provider and reads what it returned.
fn call_provider(py: Python<'_>, callable: &Py<PyAny>) -> Result<Credentials, String> {
    let describe = |e: PyErr| format!("credential_provider raised {e}");
    let value = callable.call0(py).map_err(describe)?;
    let map = value
        .bind(py)
        .downcast::<PyMapping>()
        .map_err(|_| "credential_provider must return a mapping (a dict)".to_owned())?;
    let text = |name: &str| -> Result<Option<String>, String> {
        match map.get_item(name) {
            Ok(v) if v.is_none() => Ok(None),
            Ok(v) => v
                .extract::<String>()
                .map(Some)
                .map_err(|_| format!("credential_provider's {name:?} must be a str")),
            Err(_) => Ok(None),
        }
    };
    let required =
        |name: &str| text(name)?.ok_or_else(|| format!("credential_provider returned no {name:?}"));
    let id = required("access_key_id")?;
    let secret = required("secret_access_key")?;
    let token = match text("token")? {
        Some(t) => Some(t),
        None => text("session_token")?,
    };
    let expiry = match map.get_item("expires_at") {
        Err(_) => None,
        Ok(v) if v.is_none() => None,
        Ok(v) => Some(expiry_of(&v)?),
    };
    Ok(Credentials::new(
        id,
        secret,
        token,
        expiry,
        "python-credential-provider",
    ))
}

/// `expires_at` as a time: an aware `datetime`, or seconds since the epoch.
fn expiry_of(v: &Bound<'_, PyAny>) -> Result<SystemTime, String> {
    let seconds: f64 = if let Ok(s) = v.extract::<f64>() {
        s
    } else {
        let tz = v
            .getattr("tzinfo")
            .map_err(|_| "expires_at must be a datetime or seconds since the epoch".to_owned())?;
        if tz.is_none() {
            return Err("expires_at must be an aware datetime (with a tzinfo)".to_owned());
        }
        v.call_method0("timestamp")
            .and_then(|t| t.extract::<f64>())
            .map_err(|e| format!("expires_at: {e}"))?
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("expires_at {seconds} is not a time"));
    }
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds))
}
