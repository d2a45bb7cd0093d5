//! Shared test code: an event log and drop-counting values.
#![allow(dead_code, unreachable_pub)]

pub mod hook;
pub mod interest;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// An append-only log of what happened, shared between actions and the test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&self, s: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.into());
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A value that logs its drop and counts drops.
pub struct Tracked {
    pub name: String,
    pub log: Log,
    pub drops: Arc<AtomicUsize>,
}

impl Tracked {
    pub fn new(name: &str, log: &Log, drops: &Arc<AtomicUsize>) -> Self {
        Tracked {
            name: name.to_string(),
            log: log.clone(),
            drops: drops.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        self.log.push(format!("drop {}", self.name));
    }
}

/// A device with `n` actions and `n` values, all counted.
pub fn counted_device(
    n: usize,
    ran: &Arc<AtomicUsize>,
    drops: &Arc<AtomicUsize>,
) -> drmm::Device<Tracked> {
    let log = Log::new();
    let dev = drmm::Device::new(Tracked::new("data", &log, drops));
    for i in 0..n {
        let r = ran.clone();
        let _ = dev
            .add_action_named("count", move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let _ = dev
            .alloc(Tracked::new(&format!("v{i}"), &log, drops))
            .unwrap();
        let _ = dev.kzalloc(24).unwrap();
    }
    dev
}
