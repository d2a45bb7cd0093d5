//! The operation language shared by the model-based property test (`tests/model_system.rs`),
//! the fuzz target (`fuzz/fuzz_targets/ops.rs`) and the corpus replay (`tests/fuzz_corpus.rs`).
//!
//! A program is a list of [`Op`]s on a small system: two bus devices on a bus (bound to a test
//! driver whose probe creates a logical device with `Device::new_on`, or used driver-less),
//! stand-alone logical devices, drmm and devres entries, devres groups, `Devres<T>` values,
//! open files, the unplug gate and references. [`run`] executes a program against the library
//! and against a plain reference model, and after every step compares the complete sequence
//! of observable events (actions run, values dropped) with the model's. That single
//! comparison checks the promises of docs/architecture.md ("Promises"):
//!
//! * order (1): entries are released newest first, including those added during release;
//! * onion (2): a logical device's data is dropped after its drmm entries; at unbind, `remove`
//!   runs first, then revocation, then the driver data is dropped, then the devres list;
//! * exactly once (3): every value is dropped once and every action runs at most once (a
//!   removed action's captured state is dropped without running);
//! * hot-unplug (8) and revocation: entering the gate and opening fail after unplug, a
//!   `Devres` is unreachable after its binding ended, open files keep drmm state valid;
//! * bad input (6): foreign handles, stale handles, bad sizes give the documented errors;
//! * nothing leaked: at the end every value created was dropped exactly once, and the
//!   thread's live heap bytes are back where they started (counting allocator).
//!
//! Bytes decode to programs 3 bytes per operation ([`decode`]), so the fuzzer and the property
//! test speak the same language and any failing input is a replayable file.
//!
//! The files: `lang.rs` holds the operations, their byte encoding and the seed programs;
//! `model.rs` the reference model; `system.rs` the system under test (the bus, the test
//! driver, what the program holds, one step and the teardown), whose steps are in `drm.rs`
//! (logical devices, drmm entries, references, the gate, files), `bus.rs` (bindings, devres
//! entries, `Devres<T>`, groups) and `reentrant.rs` (the re-entrant operations); `checks.rs`
//! runs a program, compares it with the model after every step and checks that nothing
//! leaked; `alloc.rs` is the counting allocator.
#![allow(dead_code, unreachable_pub, clippy::too_many_lines)]

pub mod alloc;

// The checks' macros (a failed check returns its message as the `Err`), defined before the
// modules that use them.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{}: {:?} != {:?}", format!($($fmt)+), a, b));
        }
    }};
}

mod bus;
mod checks;
mod drm;
mod lang;
mod model;
mod reentrant;
#[path = "../common/subscribers.rs"]
pub mod subscribers;
mod system;

use std::sync::{Arc, Mutex};

// Each including binary uses a part of the interface.
#[allow(unused_imports)]
pub use checks::{Stats, run, run_bytes, run_in, run_panicking_on};
#[allow(unused_imports)]
pub use lang::{MAX_OPS, OP_KINDS, Op, decode, encode, seed_programs};

/// What can be observed from outside: an action ran, a value was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ev {
    Run(u32),
    Drop(u32),
    /// What a re-entrant action's early release of another entry answered (`true`: `Ok`).
    Answer(u32, bool),
}

/// The shared event log.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Ev>>>);

impl Log {
    fn push(&self, e: Ev) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }
    fn snapshot(&self) -> Vec<Ev> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

const MAGIC: u64 = 0x5eed_d00d_cafe_f00d;

/// A value whose drop is logged; checks it was not dropped before.
pub struct Val {
    id: u32,
    magic: u64,
    log: Log,
}

impl Val {
    fn new(id: u32, log: &Log) -> Self {
        Val {
            id,
            magic: MAGIC,
            log: log.clone(),
        }
    }
    fn id(&self) -> u32 {
        assert_eq!(self.magic, MAGIC, "value {} read after drop", self.id);
        self.id
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        assert_eq!(self.magic, MAGIC, "value {} dropped twice", self.id);
        self.magic = 0;
        self.log.push(Ev::Drop(self.id));
    }
}

/// Driver data of the logical devices.
pub struct DrmData(Val);
