//! `Object`, its `Body`, and the `Chunk`s a body is read in.
//!
//! A body's memory belongs to the client's budget until the body is read to its end or released,
//! and each chunk's until the chunk (and every view of it) is released. `read()` copies the rest
//! of the body into one `bytes` and returns the memory at once.

use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures_util::FutureExt;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyMemoryView};
use s3_ordered::{Checksum, NotVerified};

use crate::error::object_error;
use crate::runtime::{ForkGuard, Runtime};

/// One object of a `get_all`, at its position in the input.
#[pyclass(module = "s3_ordered._native", frozen)]
pub(crate) struct Object {
    /// The key it was asked for with.
    #[pyo3(get)]
    key: String,
    /// Its position in the input, from 0.
    #[pyo3(get)]
    seq: u64,
    /// The ETag the server sent (quotes included), or None.
    #[pyo3(get)]
    etag: Option<String>,
    /// The version id the server sent, or None.
    #[pyo3(get)]
    version_id: Option<String>,
    /// When the object was last written (`Last-Modified`), in seconds since the epoch, or None.
    #[pyo3(get)]
    last_modified: Option<f64>,
    /// The checksum algorithm the bytes were verified with (`"CRC64NVME"`, ...), or None.
    #[pyo3(get)]
    checksum: Option<&'static str>,
    /// `"verified"`, or why not: `"no_checksum"`, `"composite"` or `"off"`.
    #[pyo3(get)]
    checksum_status: &'static str,
    /// The object's bytes.
    #[pyo3(get)]
    body: Py<Body>,
}

impl Object {
    /// `keep_alive`: what must live as long as the body (the iterator a streaming body's parts
    /// come from).
    pub(crate) fn new(
        py: Python<'_>,
        o: s3_ordered::Object,
        rt: Runtime,
        keep_alive: Option<PyObject>,
    ) -> PyResult<Self> {
        let body = Body {
            _keep_alive: keep_alive,
            size: o.body.size(),
            state: ForkGuard::new(Mutex::new(State {
                body: Some(o.body),
                read: 0,
                busy: false,
            })),
            rt,
        };
        Ok(Object {
            key: o.key,
            seq: o.seq,
            etag: o.etag,
            version_id: o.version_id,
            last_modified: o
                .last_modified
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            checksum: match o.checksum {
                Checksum::Verified(a) | Checksum::VerifiedParts(a) => Some(a.as_str()),
                _ => None,
            },
            checksum_status: match o.checksum {
                Checksum::Verified(_) => "verified",
                Checksum::VerifiedParts(_) => "verified_parts",
                Checksum::NotVerified(NotVerified::Composite(_)) => "composite",
                Checksum::NotVerified(NotVerified::Off) => "off",
                _ => "no_checksum",
            },
            body: Py::new(py, body)?,
        })
    }
}

#[pymethods]
impl Object {
    /// The rest of the body as `bytes` (all of it, unless chunks were taken); see `Body.read`.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.body.get().read(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Object(key={:?}, seq={}, size={})",
            self.key,
            self.seq,
            self.body.get().size
        )
    }
}

/// The bytes of one object, whole or streaming (parts arrive as they are read).
#[pyclass(module = "s3_ordered._native", frozen)]
pub(crate) struct Body {
    _keep_alive: Option<PyObject>,
    size: u64,
    state: ForkGuard<Mutex<State>>,
    rt: Runtime,
}

struct State {
    /// `None` once read to the end.
    body: Option<s3_ordered::Body>,
    /// Bytes handed out so far.
    read: u64,
    /// A thread is waiting for the next chunk.
    busy: bool,
}

impl Body {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next chunk, waiting for it if the body streams; `None` at the end.
    fn next_bytes(&self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        // Out of the lock while waiting with the GIL released: a thread blocked on the lock
        // while holding the GIL would keep this one from ever taking the GIL back.
        let mut body = {
            let mut st = self.lock();
            if st.busy {
                return Err(PyRuntimeError::new_err(
                    "the body is being read by another thread",
                ));
            }
            match st.body.take() {
                Some(body) => body,
                None => return Ok(None),
            }
        };
        let next = match body.next_chunk().now_or_never() {
            Some(next) => Ok(next),
            None => {
                self.lock().busy = true;
                let next = self.rt.wait(py, body.next_chunk());
                self.lock().busy = false;
                next
            }
        };
        let mut st = self.lock();
        let next = match next {
            Ok(next) => next,
            Err(interrupted) => {
                st.body = Some(body); // the wait is cancel safe: nothing was lost
                return Err(interrupted);
            }
        };
        match next {
            Some(Ok(chunk)) => {
                st.read += chunk.len() as u64;
                st.body = Some(body);
                Ok(Some(chunk))
            }
            Some(Err(e)) => Err(object_error(py, &e)),
            None => Ok(None),
        }
    }
}

#[pymethods]
impl Body {
    /// The object's size in bytes.
    fn __len__(&self) -> usize {
        self.size as usize
    }

    /// True when the body streams: its parts arrive while it is read.
    #[getter]
    fn streaming(&self) -> bool {
        self.lock().body.as_ref().is_some_and(|b| b.is_streaming())
    }

    /// The rest of the body as `bytes`, copied once; its memory returns to the budget now.
    /// A second call returns `b""`, as a file's `read()` does at its end.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let rest = {
            let st = self.lock();
            if st.body.is_none() {
                return Ok(PyBytes::new(py, b""));
            }
            self.size.saturating_sub(st.read) as usize
        };
        bytes_filled(py, rest, |buf| {
            let mut filled = 0;
            while let Some(chunk) = self.next_bytes(py)? {
                let end = filled + chunk.len();
                let Some(dst) = buf.get_mut(filled..end) else {
                    return Err(PyValueError::new_err(format!(
                        "the body is longer than its {} bytes",
                        self.size
                    )));
                };
                // SAFETY: `dst` is `chunk.len()` bytes long and does not overlap the chunk,
                // which is the client's own memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        chunk.as_ptr(),
                        dst.as_mut_ptr().cast(),
                        chunk.len(),
                    )
                };
                filled = end;
            }
            if filled != rest {
                return Err(PyValueError::new_err(format!(
                    "the body ended after {filled} of {rest} bytes"
                )));
            }
            Ok(())
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next chunk as a read-only `memoryview` of the body's own memory (no copy).
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        match self.next_bytes(py)? {
            Some(bytes) => Ok(Some(Chunk { bytes }.view(py)?)),
            None => Ok(None),
        }
    }
}

/// A new `bytes` of `len` bytes. `fill` must write every byte or return `Err` (the object is
/// then dropped unseen). Unlike `PyBytes::new_with`, the buffer is not zeroed first:
/// for a large body that would be a second pass over every byte.
fn bytes_filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> PyResult<()>,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| PyValueError::new_err(format!("{len} bytes do not fit a bytes object")))?;
    // SAFETY: with a null pointer, PyBytes_FromStringAndSize allocates `len` bytes left
    // uninitialised (or returns null with an exception set, which from_owned_ptr_or_err turns
    // into Err); the new reference is ours. PyBytes_AsString returns the address of those bytes,
    // which stay valid while `obj` lives; nothing else sees the object before it is returned.
    unsafe {
        let ptr = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        let obj = Bound::from_owned_ptr_or_err(py, ptr)?.downcast_into_unchecked::<PyBytes>();
        let data = pyo3::ffi::PyBytes_AsString(ptr).cast::<std::mem::MaybeUninit<u8>>();
        fill(std::slice::from_raw_parts_mut(data, len))?;
        Ok(obj)
    }
}

/// The memory behind one chunk's views; it returns to the budget when the last view goes.
#[pyclass(module = "s3_ordered._native", frozen)]
pub(crate) struct Chunk {
    bytes: Bytes,
}

static C_CHAR: GILOnceCell<PyObject> = GILOnceCell::new();

impl Chunk {
    /// A read-only `memoryview` of the chunk. The stable ABI of Python 3.9 has no buffer
    /// protocol for extension types, so the view is over a `ctypes` array at the chunk's
    /// address, and that array keeps the chunk alive.
    fn view(self, py: Python<'_>) -> PyResult<PyObject> {
        let c_char = C_CHAR.get_or_try_init(py, || -> PyResult<PyObject> {
            Ok(py.import("ctypes")?.getattr("c_char")?.unbind())
        })?;
        let len = self.bytes.len();
        let address = self.bytes.as_ptr() as usize;
        let owner = Py::new(py, self)?;
        let array_type = c_char.bind(py).mul(len)?;
        let array = array_type.call_method1("from_address", (address,))?;
        array.setattr("_chunk", owner)?;
        Ok(PyMemoryView::from(&array)?
            .call_method1("cast", ("B",))?
            .call_method0("toreadonly")?
            .unbind())
    }
}

#[pymethods]
impl Chunk {
    fn __len__(&self) -> usize {
        self.bytes.len()
    }
}
