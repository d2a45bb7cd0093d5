//! A `tracing` subscriber that hands every `drmm` event to a callback: to re-enter the library
//! from a subscriber, to panic from one, or just to record what was emitted. Plus the harness
//! pieces those tests need: a watchdog (a deadlock fails the test instead of hanging it), a
//! child process (an abort fails the test instead of killing the whole binary) and a way to
//! run code while the thread unwinds.

use std::fmt::Debug;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// What a [`Hook`] sees of an event: its `op` field (`ADD`, `REL`, `RELEASE_BEGIN`, `UNBIND`, ...), or
/// its level (`ERROR`, `WARN`, `DEBUG`) for events without one.
pub struct Hook<F>(pub F);

impl<F: Fn(&str) + Send + Sync + 'static> Subscriber for Hook<F> {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked at every event, never cached: tests install hooks on parallel threads, and a
        // cached interest computed while another thread's hook comes or goes may be stale.
        Interest::sometimes()
    }
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target() == "drmm"
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut op = Op(None);
        e.record(&mut op);
        let level = e.metadata().level().as_str();
        (self.0)(op.0.as_deref().unwrap_or(level));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

struct Op(Option<String>);

impl Visit for Op {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "op" {
            self.0 = Some(v.to_string());
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn Debug) {
        if f.name() == "op" {
            self.0 = Some(format!("{v:?}"));
        }
    }
}

/// Runs `body` with `on_event` as this thread's subscriber.
pub fn with_hook<R>(
    on_event: impl Fn(&str) + Send + Sync + 'static,
    body: impl FnOnce() -> R,
) -> R {
    super::interest::pin();
    tracing::subscriber::with_default(Hook(on_event), body)
}

/// Runs `f` on another thread and returns its result; fails if it has not finished after
/// `secs` seconds (a deadlock: the stuck thread is left behind).
pub fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    // Under miri, which is slow and reports deadlocks itself, no deadline.
    let got = if cfg!(miri) {
        rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
    } else {
        rx.recv_timeout(Duration::from_secs(secs))
    };
    match got {
        Ok(Ok(r)) => r,
        // `resume_unwind` would skip the panic hook, and with it the message.
        Ok(Err(p)) => panic!("{}", message(&*p)),
        Err(_) => panic!("deadlock: not finished after {secs} s"),
    }
}

/// Runs `f` while this thread unwinds from a panic (in a destructor), then catches that panic.
/// Returns the message of the panic that was caught: "outer" unless something replaced it.
pub fn while_unwinding(f: impl FnOnce()) -> String {
    struct OnDrop<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for OnDrop<F> {
        fn drop(&mut self) {
            assert!(std::thread::panicking());
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    let r = quiet(|| {
        catch_unwind(AssertUnwindSafe(|| {
            let _run = OnDrop(Some(f));
            panic!("outer");
        }))
    });
    message(&*r.expect_err("the outer panic"))
}

/// The variable that tells a test it runs as the child of [`in_child`].
const CHILD: &str = "DRMM_SOUNDNESS_CHILD";

/// Runs the test `name` of this binary in a child process when called from the parent, and
/// returns whether the caller should run the body itself (it is the child). An abort in the
/// child fails the parent's assertion instead of the whole test binary.
pub fn in_child(name: &str) -> bool {
    // Miri runs no processes: the body runs in place (an abort then ends the run).
    if cfg!(miri) || std::env::var_os(CHILD).is_some() {
        return true;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read while it runs (a full pipe would stop it), with a watchdog: a deadlock fails the
    // test instead of hanging it.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let stderr = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {name}: deadlock, killed after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.success() && stdout.contains("1 passed"),
        "child {name} failed ({status}):\n{stdout}\n{stderr}"
    );
    false
}

/// The message of a panic payload.
pub fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Runs `f` with the panic hook silenced (expected panics stay out of the output).
pub fn quiet<R>(f: impl FnOnce() -> R) -> R {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    r.unwrap_or_else(|p| panic!("{}", message(&*p)))
}
