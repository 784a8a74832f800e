//! The iterators of `get_all` and `list`.
//!
//! `get_all` reads its keys lazily: each `__next__` first tops up a bounded queue from the
//! Python iterable (at most [`INPUT_AHEAD`] keys ahead of the driver), then waits for the next
//! object. An exception raised by the iterable ends the input there; it is raised again when
//! the iteration reaches that position.

use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyString, PyTuple};
use s3_ordered::{Error, ObjectRef, ObjectStream};
use tokio::sync::mpsc;

use crate::body::Object;
use crate::error::{object_error, MemoryHeldError};
use crate::runtime::{ForkGuard, Runtime};

/// Keys read from the iterable ahead of the objects handed out.
const INPUT_AHEAD: usize = 8192;

type Input = Result<ObjectRef, Error>;

/// The results of one `get_all`, in input order.
#[pyclass(module = "s3_ordered._native")]
pub(crate) struct ObjectIterator {
    /// `None` once finished or interrupted; dropping it cancels the downloads.
    stream: ForkGuard<Option<ObjectStream>>,
    rt: Runtime,
    /// The keys still to read, and where they go; `None` once the iterable is exhausted.
    input: Option<(Py<PyIterator>, mpsc::Sender<Input>)>,
    /// Keys read so far.
    fed: u64,
    /// An exception the iterable raised, and the position it took.
    input_error: Option<(u64, PyErr)>,
    raise: bool,
    /// For the held-memory check of `next()`.
    client: s3_ordered::Client,
    /// How long `next()` waits with the memory held by delivered bodies before it raises.
    held_timeout: Option<Duration>,
}

impl ObjectIterator {
    pub(crate) fn start(
        client: &s3_ordered::Client,
        rt: Runtime,
        bucket: String,
        keys: Py<PyIterator>,
        raise: bool,
        held_timeout: Option<Duration>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Input>(INPUT_AHEAD);
        let input = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let stream = {
            let _entered = rt.enter();
            client.get_stream(bucket, input)
        };
        ObjectIterator {
            stream: ForkGuard::new(Some(stream)),
            rt,
            input: Some((keys, tx)),
            fed: 0,
            input_error: None,
            raise,
            client: client.clone(),
            held_timeout,
        }
    }

    /// The error for a `next()` that has waited `waited` while only the consumer can free the
    /// memory the next object needs: bodies handed out hold it, a part waits for it, and no
    /// request is in flight that could end and free some.
    fn held(&self, waited: Duration) -> Option<PyErr> {
        if waited < self.held_timeout? {
            return None;
        }
        // Read only once the grace is over, not on every slice of the wait.
        let s = self.client.stats();
        let stuck = s.parts_waiting_for_memory > 0
            && s.requests_in_flight == 0
            && s.delivered_bytes_in_use > 0;
        stuck.then(|| {
            MemoryHeldError::new_err(format!(
                "the next object cannot start: objects already handed out hold {} of \
                 max_bytes={} (bodies not yet read to their end or released), and nothing \
                 else is in flight. Read each object's body (obj.read(), or its chunks to the \
                 end) or drop it before asking for the next one, then call next() again; or \
                 raise max_bytes",
                s.delivered_bytes_in_use,
                self.client.max_bytes()
            ))
        })
    }

    /// Moves keys from the iterable into the queue while it has room.
    fn feed(&mut self, py: Python<'_>) {
        let Some((keys, tx)) = &self.input else {
            return;
        };
        let mut keys = keys.bind(py).clone();
        // Some once the iterable is done: with its exception, if it raised one.
        let mut ended = None;
        // `try_reserve` fails when the queue is full or the driver is gone.
        while let Ok(permit) = tx.try_reserve() {
            let seq = self.fed;
            match keys.next() {
                None => {
                    ended = Some(None);
                    break;
                }
                Some(Err(e)) => {
                    let placeholder = "the iterable of keys raised an exception";
                    permit.send(Err(Error::invalid_input(placeholder)));
                    self.fed += 1;
                    ended = Some(Some((seq, e)));
                    break;
                }
                Some(Ok(item)) => {
                    permit.send(object_ref(&item, seq));
                    self.fed += 1;
                }
            }
        }
        if let Some(raised) = ended {
            self.input_error = raised;
            self.input = None;
        }
    }

    /// The object (or error) for `item`. A streaming body keeps `me`, this iterator, alive,
    /// so that `next(client.get_all(...))` can still read its body to the end.
    fn deliver(
        &mut self,
        py: Python<'_>,
        item: Result<s3_ordered::Object, Error>,
        me: PyObject,
    ) -> PyResult<Option<PyObject>> {
        match item {
            Ok(obj) => {
                let keep = obj.body.is_streaming().then_some(me);
                let obj = Object::new(py, obj, self.rt.clone(), keep)?;
                Ok(Some(Py::new(py, obj)?.into_any()))
            }
            Err(e) => {
                let raised_here = |(seq, _): &mut (u64, PyErr)| e.seq() == Some(*seq);
                if let Some((_, err)) = self.input_error.take_if(raised_here) {
                    // The input ended with the iterable's own exception: raise it as is.
                    *self.stream = None;
                    return Err(err);
                }
                let err = object_error(py, &e);
                if self.raise {
                    Err(err)
                } else {
                    Ok(Some(err.into_value(py).into_any()))
                }
            }
        }
    }
}

/// `"key"`, `("key", size)` or `("key", size, version_id)`; `size` may be `None`.
fn object_ref(item: &Bound<'_, PyAny>, seq: u64) -> Input {
    if item.is_instance_of::<PyString>() {
        return item
            .extract::<String>()
            .map(ObjectRef::without_size)
            .map_err(|e| Error::invalid_input(format!("key #{seq}: {e}")));
    }
    let bad = || {
        let type_name = item
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        Error::invalid_input(format!(
            "key #{seq}: expected \"key\", (\"key\", size) or (\"key\", size, version_id), \
             got {type_name}"
        ))
    };
    let Ok(tuple) = item.downcast::<PyTuple>() else {
        return Err(bad());
    };
    let parsed = match tuple.len() {
        2 => tuple
            .extract::<(String, Option<u64>)>()
            .map(|(k, s)| (k, s, None)),
        3 => tuple.extract::<(String, Option<u64>, Option<String>)>(),
        _ => return Err(bad()),
    };
    let Ok((key, size, version)) = parsed else {
        return Err(bad());
    };
    let mut obj = match size {
        Some(size) => ObjectRef::new(key, size),
        None => ObjectRef::without_size(key),
    };
    if let Some(v) = version {
        obj = obj.with_version(v);
    }
    Ok(obj)
}

#[pymethods]
impl ObjectIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<PyObject>> {
        let me = slf.clone().into_any().unbind();
        slf.borrow_mut().next_item(slf.py(), me)
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Leaving a `with` block closes the iteration, whether or not it was read to the end.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    /// Stops the iteration: cancels the downloads still in flight and returns their memory.
    fn close(&mut self) -> PyResult<()> {
        self.rt.check_process()?;
        *self.stream = None;
        self.input = None;
        Ok(())
    }
}

impl ObjectIterator {
    fn next_item(&mut self, py: Python<'_>, me: PyObject) -> PyResult<Option<PyObject>> {
        self.rt.check_process()?;
        let mut since = None;
        loop {
            self.feed(py);
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            let next = match stream.next().now_or_never() {
                Some(next) => next,
                // A slice at a time, topping up the keys between slices.
                None => match self.rt.wait_slice(py, stream.next()) {
                    Ok(Some(next)) => next,
                    Ok(None) => {
                        let waited = since.get_or_insert_with(Instant::now).elapsed();
                        if let Some(err) = self.held(waited) {
                            return Err(err);
                        }
                        continue;
                    }
                    Err(interrupted) => {
                        // Ctrl-C: cancel every download of this iteration.
                        *self.stream = None;
                        self.input = None;
                        return Err(interrupted);
                    }
                },
            };
            return match next {
                Some(item) => self.deliver(py, item, me),
                None => {
                    *self.stream = None;
                    Ok(None)
                }
            };
        }
    }
}

/// The keys under a prefix, as `(key, size)`.
#[pyclass(module = "s3_ordered._native")]
pub(crate) struct ListIterator {
    /// In a mutex only to be `Sync`, as Python objects must: `__next__` takes `&mut self`.
    stream: ForkGuard<std::sync::Mutex<Option<s3_ordered::ListStream>>>,
    rt: Runtime,
}

impl ListIterator {
    pub(crate) fn new(stream: s3_ordered::ListStream, rt: Runtime) -> Self {
        ListIterator {
            stream: ForkGuard::new(std::sync::Mutex::new(Some(stream))),
            rt,
        }
    }
}

#[pymethods]
impl ListIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<(String, Option<u64>)>> {
        let slot = self
            .stream
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(stream) = slot.as_mut() else {
            return Ok(None);
        };
        let next = match self.rt.wait(py, stream.next()) {
            Ok(next) => next,
            Err(interrupted) => {
                *slot = None;
                return Err(interrupted);
            }
        };
        match next {
            Some(Ok(obj)) => Ok(Some((obj.key, obj.size))),
            Some(Err(e)) => {
                *slot = None;
                Err(object_error(py, &e))
            }
            None => {
                *slot = None;
                Ok(None)
            }
        }
    }
}
