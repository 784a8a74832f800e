//! `s3_ordered.ObjectError`, the exception of one object, `MemoryHeldError` for a consumer
//! that holds the memory the next object needs, and `ValueError` for a bad configuration.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

create_exception!(
    s3_ordered,
    ObjectError,
    PyException,
    "The failure of one object (or of a listing): `.key`, `.seq`, `.kind`, `.status`, `.code` \
     and `.attempts` say which and why; the message carries the cause chain."
);

create_exception!(
    s3_ordered,
    MemoryHeldError,
    PyRuntimeError,
    "`next()` cannot go on: the objects already handed out hold the memory (`max_bytes`) the \
     next one needs, and nothing else is in flight. Read or release their bodies, then call \
     `next()` again; or raise `max_bytes`."
);

/// A refused configuration: `ValueError("invalid <field>: <reason>")`.
pub(crate) fn config_error(e: s3_ordered::ConfigError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The error's kind in `snake_case`, as Python code compares it: `"not_found"`, `"throttled"`.
fn kind_name(kind: s3_ordered::ErrorKind) -> String {
    let mut out = String::new();
    for (i, c) in format!("{kind:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// An `ObjectError` instance for `e`, its message followed by the chain of causes.
pub(crate) fn object_error(py: Python<'_>, e: &s3_ordered::Error) -> PyErr {
    let err = ObjectError::new_err(e.with_causes());
    let value = err.value(py);
    let set = || -> PyResult<()> {
        value.setattr("key", e.key())?;
        value.setattr("seq", e.seq())?;
        value.setattr("kind", kind_name(e.kind()))?;
        value.setattr("status", e.status().map(|s| s.as_u16()))?;
        value.setattr("code", e.code())?;
        value.setattr("attempts", e.attempts())?;
        Ok(())
    };
    match set() {
        Ok(()) => err,
        Err(failed) => failed,
    }
}
