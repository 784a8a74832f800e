//! The Python extension `s3_ordered._native`: a thin layer over the `s3_ordered` crate.
//!
//! It holds a `Client`, the iterators over `get_all` and `list`, and the objects and bodies they
//! yield. Everything that waits releases the GIL and wakes every [`SLICE`] to let Python raise
//! `KeyboardInterrupt`; an interrupted `get_all` drops its stream, which cancels its downloads and
//! returns their memory. The tokio runtime belongs to the module, one per process: a child made
//! by `fork` gets a new one on first use, and refuses clients made before the fork.

mod body;
mod credentials;
mod error;
mod iter;
mod runtime;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use body::{Body, Chunk, Object};
use error::{config_error, MemoryHeldError, ObjectError};
use iter::{ListIterator, ObjectIterator};
use runtime::{ForkGuard, Runtime};

/// A client with its budgets: connections, connections per `get_all`, and body memory.
#[pyclass(module = "s3_ordered._native", frozen)]
struct Client {
    inner: ForkGuard<s3_ordered::Client>,
    rt: Runtime,
}

/// `max_bytes` as given: an int, or a string with a unit ("512MiB", "2GiB").
#[derive(FromPyObject)]
enum Size {
    Int(u64),
    Text(String),
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (
        endpoint_url=None, region=None, profile=None, max_connections=64,
        max_connections_per_request=None, max_bytes=None, path_style=None, anonymous=false,
        ca_bundle=None, *, aws_access_key_id=None, aws_secret_access_key=None,
        aws_session_token=None, credential_provider=None, request_payer=None,
        expected_bucket_owner=None, sse_customer_key=None, transport=None,
        checksum_mode="when_available", hedge=true, min_body_rate=None, body_rate_window=5.0,
        s3_express_sessions=true,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        endpoint_url: Option<String>,
        region: Option<String>,
        profile: Option<String>,
        max_connections: usize,
        max_connections_per_request: Option<usize>,
        max_bytes: Option<Size>,
        path_style: Option<bool>,
        anonymous: bool,
        ca_bundle: Option<std::path::PathBuf>,
        aws_access_key_id: Option<String>,
        aws_secret_access_key: Option<String>,
        aws_session_token: Option<String>,
        credential_provider: Option<Py<PyAny>>,
        request_payer: Option<String>,
        expected_bucket_owner: Option<String>,
        sse_customer_key: Option<Vec<u8>>,
        transport: Option<String>,
        checksum_mode: &str,
        hedge: bool,
        min_body_rate: Option<Size>,
        body_rate_window: f64,
        s3_express_sessions: bool,
    ) -> PyResult<Self> {
        let value_error = |why: String| pyo3::exceptions::PyValueError::new_err(why);
        let max_bytes = match max_bytes {
            None => 256 << 20,
            Some(Size::Int(n)) => n,
            Some(Size::Text(t)) => s3_ordered::parse_size(&t)
                .map_err(|why| value_error(format!("invalid max_bytes: {why}")))?,
        };
        let min_body_rate = match min_body_rate {
            None => s3_ordered::DEFAULT_MIN_BODY_RATE.bytes_per_second,
            Some(Size::Int(n)) => n,
            Some(Size::Text(t)) => s3_ordered::parse_size(&t)
                .map_err(|why| value_error(format!("invalid min_body_rate: {why}")))?,
        };
        let body_rate_window =
            std::time::Duration::try_from_secs_f64(body_rate_window).map_err(|_| {
                value_error(format!(
                    "invalid body_rate_window: {body_rate_window} is not a number of seconds"
                ))
            })?;
        let keys = match (aws_access_key_id, aws_secret_access_key) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) if aws_session_token.is_none() => None,
            _ => {
                return Err(value_error(
                    "invalid credentials: give aws_access_key_id and aws_secret_access_key \
                     together (with aws_session_token for temporary ones)"
                        .into(),
                ))
            }
        };
        if let Some(p) = &credential_provider {
            if !p.bind(py).is_callable() {
                return Err(value_error(
                    "invalid credential_provider: it must be callable".into(),
                ));
            }
        }
        let given = keys.is_some() as u8 + credential_provider.is_some() as u8 + anonymous as u8;
        if given > 1 {
            return Err(value_error(
                "invalid credentials: give at most one of the keys, credential_provider and \
                 anonymous=True"
                    .into(),
            ));
        }
        let settings = s3_ordered::AwsSettings {
            endpoint_url,
            region,
            profile,
            // Credentials given here: the chain is asked for the region only.
            anonymous: given > 0,
            path_style,
            ca_bundle,
        };
        // Objects above half the budget stream, so that keys without sizes overlap in the
        // other half (as the command line does).
        let mut b = s3_ordered::Client::builder()
            .max_connections(max_connections)
            .max_bytes(max_bytes)
            .stream_threshold(max_bytes / 2);
        if let Some(n) = max_connections_per_request {
            b = b.max_connections_per_request(n);
        }
        match request_payer.as_deref() {
            None => {}
            Some("requester") => b = b.requester_pays(true),
            Some(other) => {
                return Err(value_error(format!(
                    "invalid request_payer: {other:?}; expected \"requester\""
                )))
            }
        }
        if let Some(owner) = expected_bucket_owner {
            b = b.expected_bucket_owner(owner);
        }
        match transport.as_deref() {
            None | Some("native") => {}
            Some("hyper") => b = b.transport(s3_ordered::HttpTransport::Hyper),
            Some(other) => {
                return Err(value_error(format!(
                    "invalid transport: {other:?}; expected \"native\" or \"hyper\""
                )))
            }
        }
        b = b.checksum_mode(match checksum_mode {
            "when_available" => s3_ordered::ChecksumMode::WhenAvailable,
            "required" => s3_ordered::ChecksumMode::Required,
            "off" => s3_ordered::ChecksumMode::Off,
            other => {
                return Err(value_error(format!(
                    "invalid checksum_mode: {other:?}; expected \"when_available\", \
                     \"required\" or \"off\""
                )))
            }
        });
        if !hedge {
            b = b.hedge(s3_ordered::HedgeConfig::off());
        }
        b = b.s3_express_sessions(s3_express_sessions);
        b = b.min_body_rate(s3_ordered::MinBodyRate {
            bytes_per_second: min_body_rate,
            window: body_rate_window,
        });
        if let Some(key) = sse_customer_key {
            b = b.sse_customer_key(key);
        }
        let rt = Runtime::current()?;
        // The AWS default chain (credentials and region), with the GIL released: it may ask
        // STS, a credential_process or the metadata service.
        let mut b = rt
            .wait(py, b.aws_default_chain(&settings))?
            .map_err(config_error)?;
        if let Some((id, secret)) = keys {
            b = b.static_credentials(id, secret, aws_session_token);
        } else if let Some(p) = credential_provider {
            b = b.credentials_provider(credentials::PyProvider::new(p));
        }
        let inner = {
            let _entered = rt.enter();
            b.build().map_err(config_error)?
        };
        raise_descriptor_limit(inner.max_connections());
        Ok(Client {
            inner: ForkGuard::new(inner),
            rt,
        })
    }

    /// Fetches `keys` (an iterable of `"key"`, `("key", size)` or `("key", size, version_id)`)
    /// and yields one result per key, in input order.
    ///
    /// `held_memory_timeout`: seconds `next()` waits, when objects already handed out hold
    /// the memory the next one needs and nothing else is in flight, before it raises
    /// `MemoryHeldError` (another thread may release bodies meanwhile); `None` waits for ever.
    #[pyo3(signature = (bucket, keys, *, errors="raise", held_memory_timeout=Some(5.0)))]
    fn get_all(
        &self,
        bucket: String,
        keys: &Bound<'_, PyAny>,
        errors: &str,
        held_memory_timeout: Option<f64>,
    ) -> PyResult<ObjectIterator> {
        self.rt.check_process()?;
        let raise = match errors {
            "raise" => true,
            "return" => false,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "invalid errors: {other:?}; expected \"raise\" or \"return\""
                )))
            }
        };
        let held_timeout = match held_memory_timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => Some(std::time::Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "invalid held_memory_timeout: {t}; expected seconds >= 0, or None"
                )))
            }
        };
        let input = keys.try_iter()?.unbind();
        Ok(ObjectIterator::start(
            &self.inner,
            self.rt.clone(),
            bucket,
            input,
            raise,
            held_timeout,
        ))
    }

    /// Lists the keys under `prefix` as `(key, size)` tuples, in S3's order, page by page.
    fn list(&self, bucket: String, prefix: String) -> PyResult<ListIterator> {
        self.rt.check_process()?;
        let _entered = self.rt.enter();
        Ok(ListIterator::new(
            self.inner.list(bucket, prefix),
            self.rt.clone(),
        ))
    }

    /// Counters and gauges of this client.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("objects", s.objects)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("parts", s.parts)?;
        d.set_item("requests", s.requests)?;
        d.set_item("errors", s.errors)?;
        d.set_item("retries", s.retries)?;
        d.set_item("throttled", s.throttled)?;
        d.set_item("region_redirects", s.region_redirects)?;
        d.set_item("stale_connections", s.stale_connections)?;
        d.set_item("checksums_verified", s.checksums_verified)?;
        d.set_item("checksums_unavailable", s.checksums_unavailable)?;
        d.set_item("checksum_mismatches", s.checksum_mismatches)?;
        d.set_item("checksum_heads", s.checksum_heads)?;
        d.set_item("hedges_sent", s.hedges_sent)?;
        d.set_item("hedges_won", s.hedges_won)?;
        d.set_item("slow_bodies_resumed", s.slow_bodies_resumed)?;
        d.set_item("sessions_created", s.sessions_created)?;
        d.set_item("concurrency_limit", s.concurrency_limit)?;
        d.set_item("requests_in_flight", s.requests_in_flight)?;
        d.set_item("connection_limit", s.connection_limit)?;
        d.set_item("connections_opened", s.connections_opened)?;
        d.set_item("open_connections", s.open_connections)?;
        d.set_item("busy_connections", s.busy_connections)?;
        d.set_item("bytes_in_use", s.bytes_in_use)?;
        d.set_item("streaming_bytes_in_use", s.streaming_bytes_in_use)?;
        d.set_item("delivered_bytes_in_use", s.delivered_bytes_in_use)?;
        d.set_item("parts_waiting_for_memory", s.parts_waiting_for_memory)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let s = self.inner.stats();
        format!(
            "Client(open_connections={}, bytes_in_use={})",
            s.open_connections, s.bytes_in_use
        )
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<ObjectIterator>()?;
    m.add_class::<ListIterator>()?;
    m.add_class::<Object>()?;
    m.add_class::<Body>()?;
    m.add_class::<Chunk>()?;
    m.add("ObjectError", m.py().get_type::<ObjectError>())?;
    m.add("MemoryHeldError", m.py().get_type::<MemoryHeldError>())?;
    Ok(())
}

/// Descriptors a process wants beyond its client's connections: the interpreter's files,
/// the runtime's, and whatever else it opens.
const DESCRIPTORS_BESIDE: u64 = 256;

/// Raises the process's soft `RLIMIT_NOFILE` toward the hard limit, as far as `connections`
/// (and [`DESCRIPTORS_BESIDE`]) want; never lowers it. Without enough descriptors the client
/// still works, over fewer connections (`stats()["connection_limit"]`).
fn raise_descriptor_limit(connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let wanted = (connections as u64).saturating_add(DESCRIPTORS_BESIDE);
    let raised = wanted.min(lim.rlim_max);
    if raised <= lim.rlim_cur {
        return;
    }
    lim.rlim_cur = raised;
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}
