//! The re-entrant parts of the operation language: user code that calls back into the
//! library (a release action releasing and adding entries of its own device, a managed value
//! whose drop re-enters another device, a `Devres` owning another).

use super::*;

/// The value of a `Devres`: a logged value and, for `Op::DevresNested`, the `Devres` of the
/// same binding it owns (dropped after the value, in field order).
pub struct DVal {
    pub(super) val: Val,
    pub(super) inner: Option<Devres<Val>>,
}

/// The value of `Op::DrmValueReenters`: its drop re-enters `dev` (see there).
pub struct ReVal {
    pub(super) id: u32,
    pub(super) log: Log,
    pub(super) dev: Device<DrmData>,
    pub(super) target: Option<Target>,
    pub(super) adds: u32,
}

impl Drop for ReVal {
    fn drop(&mut self) {
        if let Some(t) = self.target.take() {
            let d = &self.dev;
            let r = nested_release(|| match t {
                Target::Action(h) => d.release_action(h),
                Target::Value(h) => d.kfree(h),
                Target::Bytes(h) => d.kfree(h),
                Target::ReVal(h) => d.kfree(h),
            });
            match r {
                Ok(()) => self.log.push(Ev::Answer(self.id, true)),
                Err(Error::NotOnList) => self.log.push(Ev::Answer(self.id, false)),
                Err(e) => panic!("a value's drop releasing an entry answered {e:?}"),
            }
        }
        let v = self
            .dev
            .alloc(Val::new(self.adds, &self.log))
            .expect("adding from a value's drop");
        drop(v);
        self.log.push(Ev::Drop(self.id));
        // `dev` is dropped after this: maybe the device's last reference.
    }
}

/// A handle a re-entrant action owns and releases early when it runs.
pub(super) enum Target {
    Action(ActionHandle),
    Value(Managed<Val>),
    Bytes(Managed<[u8]>),
    ReVal(Managed<ReVal>),
}

/// An early release made by user code (a re-entrant action, a value's drop). A panic of the
/// panicking subscriber surfacing from it means the entry was found (the events it panics on
/// are only emitted for an entry taken off), so it counts as `Ok`; the user code goes on.
fn nested_release(f: impl FnOnce() -> drmm::Result<()>) -> drmm::Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) if subscribers::is_subscriber_panic(&*p) => Ok(()),
        Err(p) => std::panic::resume_unwind(p),
    }
}

impl From<H> for Target {
    fn from(h: H) -> Target {
        match h {
            H::Action(a) => Target::Action(a),
            H::Value(v) => Target::Value(v),
            H::Bytes(b) => Target::Bytes(b),
            H::ReVal(r) => Target::ReVal(r),
        }
    }
}

/// The action of `Op::DrmReentrant`: releases `target` on its own device (logging the answer),
/// then adds value `adds` to it and lets its handle go (the entry stays until the release).
pub(super) fn reentrant_action(
    log: &Log,
    id: u32,
    target: Arc<Mutex<Option<Target>>>,
    adds: u32,
) -> impl FnOnce(&LogicalDevice<DrmData>) + Send + 'static {
    let log = log.clone();
    let captured = Val::new(id, &log);
    move |d| {
        log.push(Ev::Run(id));
        let t = target.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let r = nested_release(|| match t {
                Target::Action(h) => d.release_action(h),
                Target::Value(h) => d.kfree(h),
                Target::Bytes(h) => d.kfree(h),
                Target::ReVal(h) => d.kfree(h),
            });
            match r {
                Ok(()) => log.push(Ev::Answer(id, true)),
                Err(Error::NotOnList) => log.push(Ev::Answer(id, false)),
                Err(e) => panic!("re-entrant release of an own entry answered {e:?}"),
            }
        }
        let v = d
            .alloc(Val::new(adds, &log))
            .expect("adding from a re-entrant action");
        drop(v);
        drop(captured);
    }
}
