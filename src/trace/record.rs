//! The recorder: a `tracing-subscriber` layer that writes the library's events as JSON lines
//! (the format of `docs/trace-schema.md`).
//!
//! Each event is formatted on its own thread into a buffer of that thread (reused: no
//! allocation once warm), then appended to the file's buffer under the recorder's own lock,
//! where its timestamp is taken, so that timestamps never decrease along the file. The file's
//! buffer is flushed when full, by [`RecordGuard::flush`], and when the guard is dropped;
//! after that every event is flushed as it is written.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

use super::{ENV_VAR, SCHEMA_VERSION, TARGET};

/// Bytes buffered before the file is written.
const BUFFER: usize = 64 * 1024;

/// The first line of a trace.
#[derive(Serialize)]
struct Header {
    schema: &'static str,
    version: u32,
    pid: u32,
    clock: &'static str,
}

/// Why recording could not start, or writing the trace failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The trace file could not be created or its header written.
    #[error("cannot create the trace file {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The error of the system.
        source: io::Error,
    },
    /// Writing the trace failed (the first error; the events after it are lost).
    #[error("writing the trace failed: {0}")]
    Write(#[source] io::Error),
    /// A global `tracing` subscriber is already set, so this one cannot be: add a
    /// [`RecordLayer`] to that subscriber instead.
    #[error(
        "a global tracing subscriber is already set: add drmm::trace::RecordLayer to it instead"
    )]
    SubscriberAlreadySet,
}

/// What the layer and its guard share: the clock's origin and the output.
struct Shared {
    start: Instant,
    sink: Mutex<Sink>,
}

struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
    /// The first write error; nothing is written after it.
    error: Option<io::Error>,
    /// Set when the guard is gone: nobody would flush the buffer any more.
    flush_each: bool,
}

impl Shared {
    fn sink(&self) -> MutexGuard<'_, Sink> {
        // A panic while writing leaves at worst a partial line: go on.
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one event (`fields`: `"op":...` and the rest, comma-separated).
    fn write_event(&self, thread: &[u8], fields: &[u8]) {
        let mut sink = self.sink();
        if sink.error.is_some() {
            return;
        }
        // Taken under the lock, so that lines are in time order.
        let t = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let flush = sink.flush_each;
        let out = &mut sink.out;
        let r = write!(out, "{{\"t\":{t},")
            .and_then(|()| out.write_all(thread))
            .and_then(|()| out.write_all(b","))
            .and_then(|()| out.write_all(fields))
            .and_then(|()| out.write_all(b"}\n"))
            .and_then(|()| if flush { out.flush() } else { Ok(()) });
        if let Err(e) = r {
            sink.error = Some(e);
        }
    }

    fn flush(&self) -> Result<(), RecordError> {
        let mut sink = self.sink();
        if sink.error.is_none()
            && let Err(e) = sink.out.flush()
        {
            sink.error = Some(e);
        }
        match &sink.error {
            None => Ok(()),
            Some(e) => Err(RecordError::Write(io::Error::new(e.kind(), e.to_string()))),
        }
    }
}

/// A [`tracing_subscriber::Layer`] that records the library's events (target `drmm`, with an
/// `op` field) as JSON lines: a header line, then one object per event (`docs/trace-schema.md`).
///
/// [`record_to`] installs it as the global subscriber in one line; this type is for programs
/// that compose their own subscriber. Events of other targets are ignored; give the layer a
/// filter (as below) so that they are not even built for it.
///
/// A scoped subscriber (`with_default`, `set_default`) on one thread while other threads run
/// without one can miss events with `tracing-core` 0.1: while it is the only registered
/// dispatcher, a call site first reached by a thread without a subscriber is cached as
/// uninteresting for every thread (tokio-rs/tracing#2874, #3611). A global subscriber does not
/// have the problem; test suites that install scoped ones on several threads keep a second
/// dispatcher registered for the whole run (as this crate's own tests do).
///
/// # Examples
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// use tracing_subscriber::Layer;
///
/// let path = std::env::temp_dir().join(format!("drmm-doc-{}.jsonl", std::process::id()));
/// let (layer, guard) = drmm::trace::RecordLayer::create(&path)?;
/// let only_drmm = tracing_subscriber::filter::filter_fn(|m| m.target() == drmm::trace::TARGET);
/// let subscriber = tracing_subscriber::registry().with(layer.with_filter(only_drmm));
/// tracing::subscriber::with_default(subscriber, || {
///     let dev = drmm::Device::with_name("card0", ());
///     let _buf = dev.kzalloc(64).unwrap();
/// });
/// guard.finish()?;
/// let trace = std::fs::read_to_string(&path)?;
/// assert!(trace.lines().next().unwrap().contains(r#""schema":"drmm-trace""#));
/// assert!(trace.contains(r#""op":"ADD""#));
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RecordLayer {
    shared: Arc<Shared>,
}

/// Flushes the trace when dropped; keep it alive until the end of the program (bind it to a
/// name: `let _guard = ...`, not `let _ = ...`, which drops it at once).
///
/// After the guard is gone the layer still records, flushing each event as it is written.
#[must_use = "dropping the guard flushes the trace and makes every later event slow to write"]
pub struct RecordGuard {
    shared: Arc<Shared>,
}

impl RecordLayer {
    /// A layer that writes to `out`, with its guard. The header line is written at once.
    ///
    /// # Errors
    ///
    /// [`RecordError::Write`] if the header could not be written.
    pub fn new(
        out: impl Write + Send + 'static,
    ) -> Result<(RecordLayer, RecordGuard), RecordError> {
        let mut out = BufWriter::with_capacity(BUFFER, Box::new(out) as Box<dyn Write + Send>);
        let header = Header {
            schema: "drmm-trace",
            version: SCHEMA_VERSION,
            pid: std::process::id(),
            clock: "monotonic-ns",
        };
        serde_json::to_writer(&mut out, &header)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(RecordError::Write)?;
        let shared = Arc::new(Shared {
            start: Instant::now(),
            sink: Mutex::new(Sink {
                out,
                error: None,
                flush_each: false,
            }),
        });
        let guard = RecordGuard {
            shared: shared.clone(),
        };
        Ok((RecordLayer { shared }, guard))
    }

    /// A layer that writes to the file at `path` (created, or truncated).
    ///
    /// # Errors
    ///
    /// [`RecordError::Create`] if the file cannot be created or its header written.
    pub fn create(path: impl AsRef<Path>) -> Result<(RecordLayer, RecordGuard), RecordError> {
        let path = path.as_ref();
        let create = |source| RecordError::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(create)?;
        let (layer, guard) = Self::new(file).map_err(|e| match e {
            RecordError::Write(source) => create(source),
            other => other,
        })?;
        // The header reaches the file now: a trace is never an empty file.
        guard.flush().map_err(|e| match e {
            RecordError::Write(source) => create(source),
            other => other,
        })?;
        Ok((layer, guard))
    }
}

impl RecordGuard {
    /// Writes what is buffered to the file.
    ///
    /// # Errors
    ///
    /// [`RecordError::Write`] with the first error met while writing the trace.
    pub fn flush(&self) -> Result<(), RecordError> {
        self.shared.flush()
    }

    /// Flushes the trace and ends the guard, reporting the first write error if any.
    ///
    /// # Errors
    ///
    /// As for [`flush`](Self::flush).
    pub fn finish(self) -> Result<(), RecordError> {
        self.shared.flush()
        // `Drop` flushes again (nothing left) and switches to flushing every event.
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let _ = self.shared.flush();
        self.shared.sink().flush_each = true;
    }
}

impl fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordLayer").finish_non_exhaustive()
    }
}

impl fmt::Debug for RecordGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordGuard").finish_non_exhaustive()
    }
}

thread_local! {
    /// This thread's line buffer (reused for every event).
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// This thread's `"thread":"..."` member, made on its first event.
    static THREAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `"thread":"<name>"`, or `"thread":"ThreadId(N)"` for an unnamed thread.
fn thread_member(out: &mut Vec<u8>) {
    let current = std::thread::current();
    out.extend_from_slice(b"\"thread\":");
    let written = match current.name() {
        Some(name) => serde_json::to_writer(&mut *out, name),
        None => serde_json::to_writer(&mut *out, &format!("{:?}", current.id())),
    };
    debug_assert!(written.is_ok(), "writing to a Vec does not fail");
}

impl<S: Subscriber> Layer<S> for RecordLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let record = |line: &mut Vec<u8>| {
            line.clear();
            let mut fields = Fields {
                out: line,
                op: false,
            };
            event.record(&mut fields);
            if !fields.op {
                return;
            }
            let write = |thread: &[u8]| self.shared.write_event(thread, line);
            match THREAD.try_with(|t| {
                t.try_borrow_mut().ok().map(|mut t| {
                    if t.is_empty() {
                        thread_member(&mut t);
                    }
                    write(&t);
                })
            }) {
                Ok(Some(())) => {}
                // Re-entered, or the thread's locals are being destroyed: made afresh.
                _ => {
                    let mut t = Vec::new();
                    thread_member(&mut t);
                    write(&t);
                }
            }
        };
        // A field's `Debug` may emit an event itself (re-entering this layer), and a thread's
        // last events may come while its locals are destroyed: a fresh buffer then.
        let done = LINE
            .try_with(|l| l.try_borrow_mut().ok().map(|mut l| record(&mut l)))
            .ok()
            .flatten();
        if done.is_none() {
            record(&mut Vec::new());
        }
    }
}

/// Writes an event's fields as JSON members (`"key":value`, comma-separated), skipping its
/// message.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    op: bool,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        if !self.out.is_empty() {
            self.out.push(b',');
        }
        let written = serde_json::to_writer(&mut *self.out, field.name());
        debug_assert!(written.is_ok(), "writing to a Vec does not fail");
        self.out.push(b':');
        self.op |= field.name() == "op";
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        let written = serde_json::to_writer(&mut *self.out, value);
        debug_assert!(written.is_ok(), "writing to a Vec does not fail");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // `null` for NaN and infinities, which JSON has no number for.
        let written = serde_json::to_writer(&mut *self.out, &value);
        debug_assert!(written.is_ok(), "writing to a Vec does not fail");
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return;
        }
        self.key(field);
        self.out.push(b'"');
        // Escaped as it is formatted: no intermediate string.
        let _ = write!(Escaped(self.out), "{value:?}");
        self.out.push(b'"');
    }
}

/// Writes text into a JSON string (without the quotes), escaping what JSON requires.
struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.extend_from_slice(b"\\\""),
                '\\' => self.0.extend_from_slice(b"\\\\"),
                '\n' => self.0.extend_from_slice(b"\\n"),
                '\r' => self.0.extend_from_slice(b"\\r"),
                '\t' => self.0.extend_from_slice(b"\\t"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", u32::from(c));
                }
                c => {
                    let mut b = [0; 4];
                    self.0.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        Ok(())
    }
}

/// Records the library's events to the file at `path` (created, or truncated) as JSON lines,
/// by installing a global `tracing` subscriber with a [`RecordLayer`] that takes target `drmm`
/// only. Keep the guard until the end of the program: dropping it flushes the file.
///
/// # Errors
///
/// [`RecordError::SubscriberAlreadySet`] if the program already has a global subscriber (the
/// file is not touched then: add a [`RecordLayer`] to that subscriber instead);
/// [`RecordError::Create`] if the file cannot be created.
///
/// # Examples
///
/// ```no_run
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let _trace = drmm::trace::record_to("run.jsonl")?;
///     let dev = drmm::Device::with_name("card0", ());
///     let _ = drmm::add_action!(dev, |_| println!("bye"))?;
///     Ok(()) // `dev` is released, then `_trace` flushes the file
/// }
/// ```
pub fn record_to(path: impl AsRef<Path>) -> Result<RecordGuard, RecordError> {
    if tracing::dispatcher::has_been_set() {
        return Err(RecordError::SubscriberAlreadySet);
    }
    let (layer, guard) = RecordLayer::create(path)?;
    let only_drmm = tracing_subscriber::filter::filter_fn(|m| m.target() == TARGET);
    let subscriber = tracing_subscriber::registry().with(layer.with_filter(only_drmm));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| RecordError::SubscriberAlreadySet)?;
    Ok(guard)
}

/// [`record_to`] the path in the environment variable `DRMM_TRACE`, if it is set and not
/// empty; `Ok(None)` (and nothing installed) otherwise.
///
/// # Errors
///
/// As for [`record_to`].
///
/// # Examples
///
/// ```
/// // DRMM_TRACE=run.jsonl ./my-driver-test  records; without the variable this does nothing.
/// let _trace = drmm::trace::init_from_env()?;
/// # Ok::<(), drmm::trace::RecordError>(())
/// ```
pub fn init_from_env() -> Result<Option<RecordGuard>, RecordError> {
    match std::env::var_os(ENV_VAR) {
        Some(path) if !path.is_empty() => record_to(path).map(Some),
        _ => Ok(None),
    }
}
