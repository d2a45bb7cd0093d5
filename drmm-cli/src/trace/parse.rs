//! Reading a trace: the header line, then one event per line (schema version 1).
//!
//! Every malformed input becomes a [`ReadError`] that names the file and the line; nothing in
//! here panics on any input. Unknown keys are ignored (minor additions stay version 1) and
//! unknown operations are counted and skipped.
//!
//! A last line whose JSON ends early is a trace cut mid-write (the program died while the
//! recorder wrote). By default that is an error naming the line, because an analysis
//! of a cut trace reports false leaks; with `allow_truncated` the line is dropped, the rest is
//! analysed and [`Trace::truncated`] names the dropped line so the caller can warn.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::raw::{RawEvent, RawHeader};

/// The header's `schema` value.
pub(crate) const SCHEMA: &str = "drmm-trace";
/// The schema version this reader understands.
pub(crate) const VERSION: u64 = 1;

/// Why a trace could not be read. Each message is one line and starts with `file` or
/// `file:line`, so editors and terminals can jump to it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The file has no line at all.
    #[error("{path}: empty file, not a drmm trace (expected a header line first)")]
    Empty { path: String },
    /// Line 1 is not a drmm trace header.
    #[error(
        "{path}:1: not a drmm trace header ({why}); expected {{\"schema\":\"drmm-trace\",\"version\":1,...}}"
    )]
    Header { path: String, why: String },
    /// The header names a version this reader does not know.
    #[error(
        "{path}:1: trace schema version {version} is not supported (this drmm reads version 1)"
    )]
    Version { path: String, version: u64 },
    /// A line that is not one JSON object.
    #[error("{path}:{line}: bad JSON: {msg}")]
    Json {
        path: String,
        line: usize,
        msg: String,
    },
    /// The last line was cut mid-write.
    #[error(
        "{path}:{line}: truncated last line (the trace was cut mid-write); pass --allow-truncated to analyse the lines before it"
    )]
    Truncated { path: String, line: usize },
    /// A well-formed JSON line that is not a valid event.
    #[error("{path}:{line}: invalid event: {msg}")]
    Event {
        path: String,
        line: usize,
        msg: String,
    },
}

/// The two resource lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum List {
    /// A bus device's devres list.
    Devres,
    /// A logical device's drmm list.
    Drmm,
}

impl List {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            List::Devres => "devres",
            List::Drmm => "drmm",
        }
    }
}

/// Generates [`Op`] with its spelling in the trace.
macro_rules! ops {
    ($($variant:ident = $text:literal,)*) => {
        /// The operations of schema version 1.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) enum Op { $($variant,)* }

        impl Op {
            fn parse(text: &str) -> Option<Op> {
                match text { $($text => Some(Op::$variant),)* _ => None }
            }

            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Op::$variant => $text,)* }
            }
        }
    };
}

ops! {
    Add = "ADD",
    Del = "DEL",
    Rel = "REL",
    Rem = "REM",
    Replace = "REPLACE",
    AddFailed = "ADD_FAILED",
    ReleaseBegin = "RELEASE_BEGIN",
    ReleaseEnd = "RELEASE_END",
    Create = "CREATE",
    Register = "REGISTER",
    Unregister = "UNREGISTER",
    Unplug = "UNPLUG",
    Open = "OPEN",
    Close = "CLOSE",
    LastRef = "LAST_REF",
    DeviceAdd = "DEVICE_ADD",
    Probe = "PROBE",
    Bind = "BIND",
    Unbind = "UNBIND",
    DeviceRemove = "DEVICE_REMOVE",
    Revoke = "REVOKE",
    Refused = "REFUSED",
    Get = "GET",
    Put = "PUT",
    Panic = "PANIC",
}

impl Op {
    /// Events about one entry: they need `dev`, `list` and `entry`.
    pub(crate) fn is_entry_op(self) -> bool {
        matches!(
            self,
            Op::Add | Op::Del | Op::Rel | Op::Rem | Op::Replace | Op::AddFailed
        )
    }
}

/// The header line.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// The recording process.
    pub(crate) pid: Option<u64>,
}

/// One event, with the trace line it came from.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// 1-based line number in the trace file.
    pub(crate) line: usize,
    pub(crate) t: u64,
    pub(crate) thread: Option<String>,
    pub(crate) op: Op,
    pub(crate) dev: Option<u64>,
    pub(crate) dev_name: Option<String>,
    pub(crate) dev_kind: Option<String>,
    pub(crate) list: Option<List>,
    pub(crate) entry: Option<u64>,
    pub(crate) name: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) file: Option<String>,
    /// The caller's source line (the trace's `line` key).
    pub(crate) src_line: Option<u32>,
    pub(crate) ref_id: Option<u64>,
    pub(crate) detail: Option<String>,
}

impl Event {
    /// `file:line` of the caller, when the event has one.
    pub(crate) fn location(&self) -> Option<String> {
        location(self.file.as_deref(), self.src_line)
    }
}

/// `file:line`, `file`, or nothing.
pub(crate) fn location(file: Option<&str>, line: Option<u32>) -> Option<String> {
    match (file, line) {
        (Some(f), Some(l)) => Some(format!("{f}:{l}")),
        (Some(f), None) => Some(f.to_owned()),
        _ => None,
    }
}

/// A whole trace, read.
#[derive(Debug)]
pub(crate) struct Trace {
    /// The path as the user gave it (for messages).
    pub(crate) path: String,
    pub(crate) header: Header,
    /// How many events were read (and given to the sink).
    pub(crate) events: usize,
    /// Events whose `op` this reader does not know, by op, with their count.
    pub(crate) unknown_ops: BTreeMap<String, u64>,
    /// The line dropped because it was cut mid-write (only with `allow_truncated`).
    pub(crate) truncated: Option<usize>,
}

/// serde_json's message without its "at line 1 column N" (each line is parsed alone, so the
/// line is ours and only the column is useful).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => &text,
    };
    if e.column() > 0 {
        format!("{text} at column {}", e.column())
    } else {
        text.to_owned()
    }
}

/// How long reading may take before the progress bar appears.
const PROGRESS_AFTER: Duration = Duration::from_millis(300);

/// Reads the trace at `path`.
///
/// A progress bar is drawn on stderr when reading takes longer than a moment and stderr is a
/// terminal (indicatif hides it otherwise).
///
/// # Errors
///
/// A [`ReadError`] naming the file and line of the first problem.
pub(crate) fn read(
    path: &Path,
    allow_truncated: bool,
    sink: &mut dyn FnMut(Event),
) -> Result<Trace, ReadError> {
    let shown = path.display().to_string();
    let io_err = |source| ReadError::Io {
        path: shown.clone(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let result = read_lines(&mut reader, &shown, allow_truncated, sink, |read| {
        bar.set_position(read);
        if bar.is_hidden() && started.elapsed() > PROGRESS_AFTER {
            bar.set_style(
                ProgressStyle::with_template("reading {msg} {wide_bar} {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(shown.clone());
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    });
    bar.finish_and_clear();
    result
}

/// Reads a trace from any reader, giving each event to `sink` as it is read (a trace can be
/// far larger than its analysis); `progress` gets the number of bytes read so far, now and then.
pub(crate) fn read_lines(
    reader: &mut dyn BufRead,
    path: &str,
    allow_truncated: bool,
    sink: &mut dyn FnMut(Event),
    mut progress: impl FnMut(u64),
) -> Result<Trace, ReadError> {
    let io_err = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut buf = Vec::with_capacity(256);
    let mut line_no = 0usize;
    let mut bytes = 0u64;
    let mut have_header = false;
    let mut trace = Trace {
        path: path.to_owned(),
        header: Header { pid: None },
        events: 0,
        unknown_ops: BTreeMap::new(),
        truncated: None,
    };
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        bytes += n as u64;
        if line_no.is_multiple_of(4096) {
            progress(bytes);
        }
        // Only the very last line can lack its newline; if it also fails to parse, the writer
        // was stopped in the middle of it.
        let unterminated = buf.last() != Some(&b'\n');
        let text = buf.trim_ascii();
        if !have_header {
            trace.header = parse_header(text, path, unterminated)?;
            have_header = true;
            continue;
        }
        if text.is_empty() {
            continue;
        }
        let raw: RawEvent = match serde_json::from_slice(text) {
            Ok(raw) => raw,
            // JSON that ends early on the last line is a cut write; elsewhere it is bad JSON.
            Err(e) if e.is_eof() && (unterminated || at_end(reader).map_err(io_err)?) => {
                if allow_truncated {
                    trace.truncated = Some(line_no);
                    break;
                }
                return Err(ReadError::Truncated {
                    path: path.to_owned(),
                    line: line_no,
                });
            }
            Err(e) => {
                return Err(ReadError::Json {
                    path: path.to_owned(),
                    line: line_no,
                    msg: json_message(&e),
                });
            }
        };
        if let Some(event) = convert(raw, line_no, path, &mut trace.unknown_ops)? {
            trace.events += 1;
            sink(event);
        }
    }
    progress(bytes);
    if !have_header {
        return Err(ReadError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(trace)
}

fn at_end(reader: &mut dyn BufRead) -> io::Result<bool> {
    Ok(reader.fill_buf()?.is_empty())
}

fn parse_header(text: &[u8], path: &str, unterminated: bool) -> Result<Header, ReadError> {
    let header_err = |why: &str| ReadError::Header {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    if text.is_empty() {
        return Err(if unterminated {
            ReadError::Empty {
                path: path.to_owned(),
            }
        } else {
            header_err("line 1 is blank")
        });
    }
    let raw: RawHeader = match serde_json::from_slice(text) {
        Ok(raw) => raw,
        Err(e) if unterminated && e.is_eof() => {
            return Err(ReadError::Truncated {
                path: path.to_owned(),
                line: 1,
            });
        }
        Err(e) => return Err(header_err(&format!("bad JSON: {}", json_message(&e)))),
    };
    match raw.schema.as_deref() {
        Some(SCHEMA) => {}
        Some(other) => return Err(header_err(&format!("schema is \"{other}\""))),
        None => return Err(header_err("no \"schema\" key")),
    }
    match raw.version {
        Some(VERSION) => Ok(Header { pid: raw.pid }),
        Some(version) => Err(ReadError::Version {
            path: path.to_owned(),
            version,
        }),
        None => Err(header_err("no \"version\" key")),
    }
}

/// Checks the keys an operation needs and builds the event; `None` for an unknown op.
fn convert(
    raw: RawEvent,
    line: usize,
    path: &str,
    unknown: &mut BTreeMap<String, u64>,
) -> Result<Option<Event>, ReadError> {
    let invalid = |msg: String| ReadError::Event {
        path: path.to_owned(),
        line,
        msg,
    };
    let Some(op_text) = raw.op else {
        return Err(invalid("no \"op\" key".to_owned()));
    };
    let Some(op) = Op::parse(&op_text) else {
        *unknown.entry(op_text).or_default() += 1;
        return Ok(None);
    };
    let Some(t) = raw.t else {
        return Err(invalid(format!("{op_text} without \"t\"")));
    };
    let list = match raw.list.as_deref() {
        None => None,
        Some("drmm") => Some(List::Drmm),
        Some("devres") => Some(List::Devres),
        Some(other) => {
            return Err(invalid(format!(
                "unknown list \"{other}\" (expected \"drmm\" or \"devres\")"
            )));
        }
    };
    let mut needs: Vec<&str> = Vec::new();
    if !matches!(op, Op::Refused | Op::Panic) {
        needs.push("dev");
    }
    if op.is_entry_op() {
        needs.extend(["list", "entry"]);
    }
    if matches!(op, Op::ReleaseBegin | Op::ReleaseEnd) {
        needs.push("list");
    }
    if matches!(op, Op::Get | Op::Put) {
        needs.push("ref_id");
    }
    for key in needs {
        let present = match key {
            "dev" => raw.dev.is_some(),
            "list" => list.is_some(),
            "entry" => raw.entry.is_some(),
            _ => raw.ref_id.is_some(),
        };
        if !present {
            return Err(invalid(format!("{op_text} without \"{key}\"")));
        }
    }
    Ok(Some(Event {
        line,
        t,
        thread: raw.thread,
        op,
        dev: raw.dev,
        dev_name: raw.dev_name,
        dev_kind: raw.dev_kind,
        list,
        entry: raw.entry,
        name: raw.name,
        kind: raw.kind,
        size: raw.size,
        file: raw.file,
        src_line: raw.line,
        ref_id: raw.ref_id,
        detail: raw.detail,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "{\"schema\":\"drmm-trace\",\"version\":1,\"pid\":7,\"clock\":\"monotonic-ns\"}\n";

    /// The trace and its events.
    fn parse(text: &str, allow_truncated: bool) -> Result<(Trace, Vec<Event>), ReadError> {
        let mut events = Vec::new();
        let trace = read_lines(
            &mut text.as_bytes(),
            "t.jsonl",
            allow_truncated,
            &mut |e| events.push(e),
            |_| {},
        )?;
        Ok((trace, events))
    }

    #[test]
    fn header_only_is_an_empty_trace() {
        let (trace, events) = parse(HEADER, false).unwrap();
        assert!(events.is_empty());
        assert_eq!(trace.header.pid, Some(7));
    }

    #[test]
    fn unknown_keys_are_ignored_and_unknown_ops_counted() {
        let text = format!(
            "{HEADER}{{\"t\":1,\"op\":\"CREATE\",\"dev\":1,\"new_key\":[1,2]}}\n{{\"t\":2,\"op\":\"FUTURE\"}}\n{{\"t\":3,\"op\":\"FUTURE\"}}\n"
        );
        let (trace, events) = parse(&text, false).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(trace.unknown_ops.get("FUTURE"), Some(&2));
    }

    #[test]
    fn a_cut_last_line_is_an_error_or_dropped_when_allowed() {
        let text =
            format!("{HEADER}{{\"t\":1,\"op\":\"CREATE\",\"dev\":1}}\n{{\"t\":2,\"op\":\"UNP");
        let err = parse(&text, false).unwrap_err();
        assert_eq!(
            err.to_string().split(':').take(2).collect::<Vec<_>>(),
            ["t.jsonl", "3"]
        );
        assert!(matches!(err, ReadError::Truncated { line: 3, .. }));
        let (trace, events) = parse(&text, true).unwrap();
        assert_eq!(trace.truncated, Some(3));
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn garbage_on_the_last_line_is_bad_json_not_a_cut() {
        let text = format!("{HEADER}{{\"t\":1,\"op\":\"CREATE\",\"dev\":1}} x");
        assert!(matches!(
            parse(&text, false).unwrap_err(),
            ReadError::Json { line: 2, .. }
        ));
        // A cut inside a string, inside a number, after a key, after a comma.
        for cut in [r#"{"t":2,"op":"UNP"#, r#"{"t":2"#, r#"{"t":"#, r#"{"t":2,"#] {
            let text = format!("{HEADER}{cut}");
            assert!(
                matches!(
                    parse(&text, false),
                    Err(ReadError::Truncated { line: 2, .. })
                ),
                "{cut}"
            );
        }
    }

    #[test]
    fn a_complete_last_line_without_newline_is_fine() {
        let text = format!("{HEADER}{{\"t\":1,\"op\":\"CREATE\",\"dev\":1}}");
        assert_eq!(parse(&text, false).unwrap().1.len(), 1);
    }

    #[test]
    fn an_early_end_in_the_middle_is_bad_json() {
        let text = format!("{HEADER}{{\"t\":1,\"op\"\n{{\"t\":1,\"op\":\"CREATE\",\"dev\":1}}\n");
        assert!(matches!(
            parse(&text, false).unwrap_err(),
            ReadError::Json { line: 2, .. }
        ));
    }

    #[test]
    fn wrong_types_and_missing_keys_name_the_line() {
        let text = format!("{HEADER}{{\"t\":\"soon\",\"op\":\"CREATE\",\"dev\":1}}\n");
        let err = parse(&text, false).unwrap_err();
        assert!(matches!(err, ReadError::Json { line: 2, .. }), "{err}");
        let text = format!("{HEADER}{{\"t\":1,\"op\":\"ADD\",\"dev\":1,\"list\":\"drmm\"}}\n");
        let err = parse(&text, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.jsonl:2: invalid event: ADD without \"entry\""
        );
    }

    #[test]
    fn headers_are_checked() {
        assert!(matches!(parse("", false), Err(ReadError::Empty { .. })));
        assert!(matches!(
            parse("{\"t\":1,\"op\":\"CREATE\"}\n", false),
            Err(ReadError::Header { .. })
        ));
        assert!(matches!(
            parse("{\"schema\":\"drmm-trace\",\"version\":2}\n", false),
            Err(ReadError::Version { version: 2, .. })
        ));
        assert!(matches!(
            parse("not json\n", false),
            Err(ReadError::Header { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let inputs: [&[u8]; 5] = [
            b"\xff\xfe\n",
            b"\n\n\n",
            b"{\"schema\":\"drmm-trace\",\"version\":1}\n\xff\n",
            b"{\"schema\":\"drmm-trace\",\"version\":18446744073709551615}\n",
            b"{\"schema\":\"drmm-trace\",\"version\":1}\n[1,2]\n",
        ];
        for input in inputs {
            let mut reader = input;
            assert!(read_lines(&mut reader, "x", false, &mut |_| {}, |_| {}).is_err());
        }
    }
}
