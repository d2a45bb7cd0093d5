//! `tracing` subscribers for running a test in each of the library's code paths: with a
//! subscriber interested in `drmm` events the library takes other branches (the bulk release
//! claims entries in batches, events are built), so every model, replay and injection test
//! runs in each [`Variant`]:
//!
//! * [`Variant::None`]: no subscriber (the untraced paths);
//! * [`Variant::Record`]: records every `drmm` event of every level and checks what it sees
//!   (fields of entry events, `RELEASE_BEGIN`/`RELEASE_END` nesting and counts); the first violation
//!   is kept for [`take_violation`];
//! * [`Variant::Reenter`]: re-enters the library from its callback on every `drmm` event:
//!   runs the read-only probe the test registered with [`reenter_with`] (reads the devices of
//!   the program) and adds and frees an entry on a device of its own;
//! * [`Variant::Panic`]: panics (with a [`SubscriberPanic`] payload) on every Nth event of a
//!   teardown-direction operation ([`PANIC_OPS`]).
//!
//! What a test expects of the panic variant: a panicking subscriber is foreign code like a
//! release action, so it must not change which entries are released, in which order, nor the
//! exactly-once answers; the panic may surface as a panic of the operation that emitted the
//! event (resumed after the operation completed), or not at all (a later panic of the same
//! release is only logged). Events of the acquiring direction (`CREATE`, `DEVICE_ADD`, `ADD`,
//! `REPLACE`, `PROBE` `ok`, `BIND`, `REGISTER`, `OPEN`, `ADD_FAILED`) never panic: what a
//! failed registration leaves behind is not a release-path promise. The subscriber never panics while its thread is already unwinding
//! (that would abort whatever the library does).
//!
//! Also here: [`watchdog`], which turns a hang (a deadlock found by the re-entering variant)
//! into a failure that names the stuck case.
#![allow(dead_code, unreachable_pub)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use drmm::trace::Op;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[path = "interest.rs"]
mod interest;
pub use interest::pin as pin_interest;

/// Which subscriber a test case runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    None,
    Record,
    Reenter,
    Panic,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::None,
        Variant::Record,
        Variant::Reenter,
        Variant::Panic,
    ];

    /// The name `DRMM_TEST_SUBSCRIBER` uses.
    pub fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Record => "record",
            Variant::Reenter => "reenter",
            Variant::Panic => "panic",
        }
    }

    fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s.trim())
    }

    /// The variants `DRMM_TEST_SUBSCRIBER` selects: a comma-separated list of
    /// `none|record|reenter|panic`, or `all` (the default; under miri the default is
    /// `none,record`: the traced paths' unsafe code, at a quarter of the cost).
    pub fn selected() -> Vec<Variant> {
        match std::env::var("DRMM_TEST_SUBSCRIBER") {
            Ok(s) if s.trim() != "all" && !s.trim().is_empty() => s
                .split(',')
                .map(|p| {
                    Variant::parse(p).unwrap_or_else(|| {
                        panic!("DRMM_TEST_SUBSCRIBER: unknown variant {p:?} (none|record|reenter|panic|all)")
                    })
                })
                .collect(),
            _ if cfg!(miri) => vec![Variant::None, Variant::Record],
            _ => Variant::ALL.to_vec(),
        }
    }

    /// Whether `DRMM_TEST_SUBSCRIBER` selects this variant (tests of a variant that is not
    /// selected return at once, saying so).
    pub fn is_selected(self) -> bool {
        let on = Variant::selected().contains(&self);
        if !on {
            eprintln!(
                "variant {} not selected by DRMM_TEST_SUBSCRIBER",
                self.name()
            );
        }
        on
    }

    /// Runs `f` with this variant's subscriber as the thread's default.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        pin_interest();
        // A call site that first registered while the pins themselves were registering can
        // still hold the answer of the thread that reached it; recomputing every site's
        // interest (a correct rebuild now that two dispatchers are registered) settles it.
        let f = move || {
            tracing::callsite::rebuild_interest_cache();
            f()
        };
        match self {
            Variant::None => f(),
            Variant::Record => tracing::subscriber::with_default(Checker::new(Mode::Record), f),
            Variant::Reenter => tracing::subscriber::with_default(Checker::new(Mode::Reenter), f),
            Variant::Panic => {
                quiet_subscriber_panics();
                tracing::subscriber::with_default(Checker::new(Mode::Panic(PANIC_EVERY, None)), f)
            }
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `f` under a subscriber that panics on every event of the operations `sites` (one
/// emission site at a time: which ones are inside the panic net).
pub fn panicking_on<R>(sites: &'static [&'static str], f: impl FnOnce() -> R) -> R {
    pin_interest();
    quiet_subscriber_panics();
    tracing::subscriber::with_default(Checker::new(Mode::Panic(1, Some(sites))), f)
}

/// The payload of the panic subscriber's panics.
#[derive(Debug)]
pub struct SubscriberPanic;

/// Whether a caught panic payload is the panic subscriber's.
pub fn is_subscriber_panic(p: &(dyn std::any::Any + Send)) -> bool {
    p.is::<SubscriberPanic>()
}

/// Operations on whose events the panic subscriber panics (the release direction).
/// `PROBE` only when it reports a failure.
pub const PANIC_OPS: &[&str] = &[
    "REL",
    "DEL",
    "REM",
    "RELEASE_BEGIN",
    "RELEASE_END",
    "PROBE",
    "UNBIND",
    "DEVICE_REMOVE",
    "UNREGISTER",
    "UNPLUG",
    "CLOSE",
];

/// Every how many panic-eligible events the panic subscriber panics.
const PANIC_EVERY: usize = 5;

/// Silences the panic hook for [`SubscriberPanic`] payloads only (installed once; not with
/// `DRMM_TEST_PANIC_LOUD` set, to see where they are raised).
pub fn quiet_subscriber_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        let loud = std::env::var_os("DRMM_TEST_PANIC_LOUD").is_some();
        std::panic::set_hook(Box::new(move |info| {
            if loud || !info.payload().is::<SubscriberPanic>() {
                prev(info);
            }
        }));
    });
}

// ----- what the subscribers saw ------------------------------------------------------------

/// Events seen by recording/re-entering/panicking subscribers, over the process.
pub static EVENTS: AtomicUsize = AtomicUsize::new(0);
/// Re-entries made by the re-entering subscriber.
pub static REENTRIES: AtomicUsize = AtomicUsize::new(0);
/// Panics raised by the panicking subscriber.
pub static PANICS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The first invariant violation the recording subscriber saw on this thread.
    static VIOLATION: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The probe the re-entering subscriber runs (see [`reenter_with`]).
    static REENTRY: RefCell<Option<Rc<dyn Fn()>>> = const { RefCell::new(None) };
    /// Inside the re-entering subscriber's probe.
    static IN_REENTRY: Cell<bool> = const { Cell::new(false) };
    /// The re-entering subscriber's own device.
    static SIDE: drmm::Device<()> = drmm::Device::with_name("subscriber-side", ());
}

/// The first violation the recording subscriber saw on this thread since the last call.
pub fn take_violation() -> Option<String> {
    VIOLATION.with(|v| v.borrow_mut().take())
}

fn violation(s: impl FnOnce() -> String) {
    let _ = VIOLATION.try_with(|v| {
        if let Ok(mut v) = v.try_borrow_mut()
            && v.is_none()
        {
            *v = Some(s());
        }
    });
}

/// Runs `f` with no subscriber (setting up a case whose events are not the point).
pub fn untraced<R>(f: impl FnOnce() -> R) -> R {
    pin_interest();
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
}

/// Registers the probe the re-entering subscriber runs on every `drmm` event of this thread,
/// until the guard is dropped. The probe must only read (it runs at arbitrary points of the
/// library's operations); it runs again only after it returned.
pub fn reenter_with(f: impl Fn() + 'static) -> ReentryGuard {
    let prev = REENTRY.with(|r| r.borrow_mut().replace(Rc::new(f)));
    ReentryGuard(prev)
}

/// Restores the previous probe when dropped.
pub struct ReentryGuard(Option<Rc<dyn Fn()>>);

impl Drop for ReentryGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        let mine = REENTRY.with(|r| std::mem::replace(&mut *r.borrow_mut(), prev));
        drop(mine);
    }
}

// ----- the subscriber ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Mode {
    Record,
    Reenter,
    /// Every how many eligible events; the eligible operations if not [`PANIC_OPS`].
    Panic(usize, Option<&'static [&'static str]>),
}

/// Nested `release begin`s deeper than this are a violation (a release inside an action of a
/// release inside ... of depth 16 is not something the tests build).
const DEPTH: usize = 16;

struct State {
    /// Open releases: (list, `REL` events of that list seen inside it).
    stack: [(u64, u64); DEPTH],
    depth: usize,
    /// Panic-eligible events since the last panic.
    since_panic: usize,
}

/// One subscriber type for the three traced variants.
struct Checker {
    mode: Mode,
    state: Mutex<State>,
    next_span: AtomicUsize,
}

impl Checker {
    fn new(mode: Mode) -> Self {
        Checker {
            mode,
            state: Mutex::new(State {
                stack: [(0, 0); DEPTH],
                depth: 0,
                since_panic: 0,
            }),
            next_span: AtomicUsize::new(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, meta: &Metadata<'_>, f: &Fields) {
        let Some(op) = f.op else {
            // Reports without an operation (a panic not resumed, a driver's message): a
            // device name or a message at least.
            if !f.dev_name && !f.message {
                violation(|| format!("drmm event without op, dev_name or message: {meta:?}"));
            }
            return;
        };
        check_schema(op, meta, f);
        let mut st = self.state();
        let dev = f.dev.unwrap_or(0);
        match op {
            "RELEASE_BEGIN" => {
                if st.depth == DEPTH {
                    violation(|| "RELEASE_BEGIN nested too deep".to_string());
                } else {
                    let d = st.depth;
                    st.stack[d] = (dev, 0);
                    st.depth += 1;
                }
            }
            "RELEASE_END" => {
                if st.depth == 0 {
                    violation(|| format!("RELEASE_END of dev {dev} without a RELEASE_BEGIN"));
                } else {
                    st.depth -= 1;
                    let (open, rels) = st.stack[st.depth];
                    if open != dev {
                        violation(|| {
                            format!("RELEASE_END of dev {dev} inside the release of dev {open}")
                        });
                    } else if f.detail_number() != Some(rels) {
                        violation(|| {
                            format!(
                                "RELEASE_END of dev {dev} says {:?} entries, {rels} REL events seen",
                                f.detail_text()
                            )
                        });
                    }
                }
            }
            "REL" if st.depth > 0 => {
                let d = st.depth - 1;
                if st.stack[d].0 == dev {
                    st.stack[d].1 += 1;
                }
            }
            _ => {}
        }
    }
}

/// Checks one event against docs/trace-schema.md: every operation's required keys, the
/// values of the enumerated keys, the keys an operation must not carry, its level.
fn check_schema(op: &'static str, meta: &Metadata<'_>, f: &Fields) {
    let fail = |what: &str| violation(|| format!("{op} event {what}: {meta:?}"));
    // Every event with an operation names its owner.
    if f.dev.is_none() || !f.dev_name {
        fail("without `dev` and `dev_name`");
    }
    let Some(bus) = f.bus else {
        return fail("without a `dev_kind` of \"logical\" or \"bus\"");
    };
    // A list is the owner's: a bus device owns a devres list, a logical device a drmm one.
    if let Some(devres) = f.devres
        && devres != bus
    {
        fail("whose `list` is not its owner's (drmm: logical, devres: bus)");
    }
    let detail = f.detail_text();
    let level = *meta.level();
    let want_level = if op == "PANIC" {
        tracing::Level::ERROR
    } else {
        tracing::Level::DEBUG
    };
    if level != want_level {
        fail("at the wrong level");
    }
    match op {
        "ADD" | "DEL" | "REL" | "REM" | "REPLACE" => {
            let required = [
                ("list", f.devres.is_some()),
                ("entry", f.entry.is_some()),
                ("name", f.name),
                ("kind", f.kind),
                ("size", f.size),
                ("file", f.file),
                ("line", f.line),
                ("message", f.message),
            ];
            if let Some((field, _)) = required.iter().find(|(_, has)| !has) {
                violation(|| format!("{op} event without the field `{field}`"));
            }
            if f.entry == Some(0) {
                fail("with entry number 0");
            }
        }
        "ADD_FAILED" => {
            if f.devres.is_none() || !f.name || !f.file || !f.line || detail.is_none() {
                fail("without `list`, `name`, `file`, `line` and `detail`");
            }
            if f.entry.is_some() || f.kind || f.size {
                fail("with `entry`, `kind` or `size`");
            }
        }
        "RELEASE_BEGIN" | "RELEASE_END" => {
            if f.devres.is_none() {
                fail("without `list`");
            }
            if op == "RELEASE_END" && f.detail_number().is_none() {
                fail("without a count in `detail`");
            }
        }
        "CREATE" | "REGISTER" | "UNREGISTER" | "UNPLUG" | "OPEN" | "CLOSE" | "LAST_REF" => {
            if bus {
                fail("of a bus device");
            }
        }
        "DEVICE_ADD" | "PROBE" | "BIND" | "UNBIND" | "DEVICE_REMOVE" | "REVOKE" => {
            if !bus {
                fail("of a logical device");
            }
            if op == "PROBE"
                && !detail.is_some_and(|d| {
                    d == "ok" || d.starts_with("failed: ") || d.starts_with("deferred: ")
                })
            {
                fail("whose `detail` is not `ok`, `failed: …` or `deferred: …`");
            }
            if op == "REVOKE" && f.detail_number().is_none() {
                fail("without a count in `detail`");
            }
        }
        "REFUSED" => {
            if !f.file || !f.line {
                fail("without `file` and `line`");
            }
            match detail {
                Some("gate" | "open") if !bus => {}
                Some("devres") if bus && f.name => {}
                _ => fail("whose `detail` is not `gate`/`open` (logical) or `devres` (bus, named)"),
            }
        }
        "GET" | "PUT" => {
            if bus || !f.ref_id {
                fail("of a bus device or without `ref_id`");
            }
            if op == "GET" && (!f.file || !f.line) {
                fail("without `file` and `line`");
            }
        }
        "PANIC" => {
            if f.devres.is_none() || !f.name || !f.file || !f.line || detail.is_none() {
                fail("without `list`, `name`, `file`, `line` and `detail`");
            }
        }
        _ => fail("of an operation the schema does not list"),
    }
}

/// The fields of one event this subscriber looks at (no allocation: leak checks run under it).
#[derive(Default)]
struct Fields {
    op: Option<&'static str>,
    dev: Option<u64>,
    dev_name: bool,
    /// `dev_kind`: whether `"bus"` (else `"logical"`); `None` when absent or neither.
    bus: Option<bool>,
    /// `list`: whether `"devres"` (else `"drmm"`); `None` when absent or neither.
    devres: Option<bool>,
    entry: Option<u64>,
    /// The first bytes of `detail`, when there is one.
    detail: Option<Head>,
    name: bool,
    kind: bool,
    size: bool,
    file: bool,
    line: bool,
    ref_id: bool,
    message: bool,
}

impl Fields {
    fn detail_text(&self) -> Option<&str> {
        self.detail
            .as_ref()
            .map(|h| std::str::from_utf8(&h.buf[..h.len]).unwrap_or(""))
    }

    fn detail_number(&self) -> Option<u64> {
        self.detail_text().and_then(|d| d.parse().ok())
    }

    /// `PROBE` reporting a failure.
    fn failed(&self) -> bool {
        self.detail_text().is_some_and(|d| d.starts_with("failed"))
    }

    fn string(&mut self, name: &str, value: &str) {
        match name {
            "op" => match Op::from_name(value) {
                Some(op) => self.op = Some(op.as_str()),
                None => violation(|| format!("unknown op {value:?}")),
            },
            "dev_kind" => {
                self.bus = [("logical", false), ("bus", true)]
                    .into_iter()
                    .find_map(|(k, b)| (k == value).then_some(b))
            }
            "list" => {
                self.devres = [("drmm", false), ("devres", true)]
                    .into_iter()
                    .find_map(|(k, b)| (k == value).then_some(b))
            }
            "kind" => {
                self.kind = true;
                if !["action", "alloc", "group_open", "group_close"].contains(&value) {
                    violation(|| format!("entry kind {value:?} not in the schema"));
                }
            }
            "detail" => {
                let mut head = Head::default();
                let _ = fmt::Write::write_str(&mut head, value);
                self.detail = Some(head);
            }
            n => self.seen(n),
        }
    }

    fn seen(&mut self, name: &str) {
        match name {
            "dev_name" => self.dev_name = true,
            "name" => self.name = true,
            "size" => self.size = true,
            "file" => self.file = true,
            "line" => self.line = true,
            "ref_id" => self.ref_id = true,
            "message" => self.message = true,
            _ => {}
        }
    }
}

/// The first bytes of a formatted value, without allocating.
#[derive(Default)]
struct Head {
    buf: [u8; 24],
    len: usize,
}

impl fmt::Write for Head {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `detail = %x` and `Option<fmt::Arguments>` arrive here; the message too.
        if field.name() == "message" {
            self.message = true;
            return;
        }
        let mut head = Head::default();
        let _ = fmt::Write::write_fmt(&mut head, format_args!("{value:?}"));
        let text = std::str::from_utf8(&head.buf[..head.len]).unwrap_or("");
        if field.name() == "detail" {
            self.detail = Some(head);
        } else {
            // A `Debug` of a string is quoted: strip the quotes for the enumerated keys.
            let text = text.trim_matches('"');
            let mut copy = Head::default();
            let _ = fmt::Write::write_str(&mut copy, text);
            let text = std::str::from_utf8(&copy.buf[..copy.len]).unwrap_or("");
            self.string(field.name(), text);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field.name(), value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "dev" => self.dev = Some(value),
            "entry" => self.entry = Some(value),
            n => self.seen(n),
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value as u64);
    }
    fn record_bool(&mut self, field: &Field, _: bool) {
        self.seen(field.name());
    }
}

impl Subscriber for Checker {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.target() == "drmm" || meta.target().starts_with("drmm::")
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) as u64)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        EVENTS.fetch_add(1, Ordering::Relaxed);
        let mut f = Fields::default();
        event.record(&mut f);
        self.check(event.metadata(), &f);
        match self.mode {
            Mode::Record => {}
            Mode::Reenter => {
                reenter();
            }
            Mode::Panic(every, sites) => {
                let op = f.op.unwrap_or("");
                let eligible = match sites {
                    Some(sites) => sites.contains(&op),
                    None => PANIC_OPS.contains(&op),
                };
                if !eligible || (op == "PROBE" && !f.failed()) || std::thread::panicking() {
                    return;
                }
                let fire = {
                    let mut st = self.state();
                    st.since_panic += 1;
                    if st.since_panic >= every {
                        st.since_panic = 0;
                        true
                    } else {
                        false
                    }
                };
                if fire {
                    PANICS.fetch_add(1, Ordering::Relaxed);
                    std::panic::panic_any(SubscriberPanic);
                }
            }
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The re-entering subscriber's callback: the test's probe, then an entry added to and freed
/// from a device of the subscriber's own. (Events of what it does are not delivered: `tracing`
/// does not re-enter a subscriber from its own callback.)
fn reenter() {
    if IN_REENTRY.with(|r| r.replace(true)) {
        return;
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_REENTRY.with(|r| r.set(false));
        }
    }
    let _leave = Leave;
    REENTRIES.fetch_add(1, Ordering::Relaxed);
    let probe = REENTRY.with(|r| r.borrow().clone());
    if let Some(p) = probe {
        p();
    }
    let _ = SIDE.try_with(|side| {
        if let Ok(h) = side.alloc(7u64) {
            assert_eq!(h.get(side).copied(), Ok(7), "subscriber's own entry");
            side.kfree(h).expect("subscriber frees its own entry");
        }
    });
}

// ----- the watchdog ------------------------------------------------------------------------

static WATCHED: Mutex<Option<HashMap<std::thread::ThreadId, (Instant, String)>>> = Mutex::new(None);
static WATCHDOG: AtomicBool = AtomicBool::new(false);

/// Marks progress of this thread and names what it runs now; if a thread makes no progress for
/// `DRMM_TEST_WATCHDOG_SECS` (default 120) seconds, the process exits with a failure naming
/// what it was running (a deadlock would otherwise hang the test forever). `None` ends the
/// watch of this thread.
pub fn watchdog(what: Option<String>) {
    if cfg!(miri) {
        // Miri reports a deadlock itself.
        return;
    }
    let id = std::thread::current().id();
    {
        let mut w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
        let map = w.get_or_insert_with(HashMap::new);
        match what {
            Some(s) => {
                map.insert(id, (Instant::now(), s));
            }
            None => {
                map.remove(&id);
            }
        }
    }
    if !WATCHDOG.swap(true, Ordering::AcqRel) {
        let limit = std::env::var("DRMM_TEST_WATCHDOG_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120u64);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let w = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(map) = w.as_ref() {
                    for (since, what) in map.values() {
                        if since.elapsed() > Duration::from_secs(limit) {
                            eprintln!(
                                "watchdog: no progress for {limit} s (a deadlock?) while running: {what}"
                            );
                            std::process::exit(3);
                        }
                    }
                }
            }
        });
    }
}
