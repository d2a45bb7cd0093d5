//! Userspace-visible state tied to one of two owners: the logical device (drmm, correct) or
//! the binding (devm, the bug this crate demonstrates).

use drmm::{Bound, Devres, LogicalDevice, Managed};

use crate::journal::{Owner, Tracked};

/// Which owner the driver gives its userspace-visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// The logical device's drmm list: the state lives until the last reference (the last
    /// close), however long after the unplug that is. Correct.
    #[default]
    Drmm,
    /// The binding (`Devres`, the kernel's `devm_*`): the state goes at unbind although open
    /// files still reach it. In C each later access is a use-after-free; here the library
    /// refuses it (`Devres::try_access` returns `None`) and the driver reports it.
    DevmEverywhere,
}

impl Lifetime {
    /// The owner that releases userspace-visible state under this lifetime.
    pub const fn owner(self) -> Owner {
        match self {
            Lifetime::Drmm => Owner::Drmm,
            Lifetime::DevmEverywhere => Owner::Devres,
        }
    }
}

/// A value that journals its own release (so that the journal says who released it).
pub(crate) trait Journaled {
    fn tracked_mut(&mut self) -> &mut Tracked;
}

/// A piece of userspace-visible state, owned by the logical device or by the binding.
#[derive(Debug)]
pub(crate) enum Tied<T: Send + Sync + 'static> {
    Drmm(Managed<T>),
    Devm(Devres<T>),
}

impl<T: Journaled + Send + Sync + 'static> Tied<T> {
    /// Puts `value` on the drmm list of `dev` or, under [`Lifetime::DevmEverywhere`], on the
    /// binding `bound`.
    #[track_caller]
    pub(crate) fn new<D>(
        lifetime: Lifetime,
        dev: &LogicalDevice<D>,
        bound: &Bound<'_>,
        mut value: T,
    ) -> drmm::Result<Self> {
        value.tracked_mut().set_owner(lifetime.owner());
        Ok(match lifetime {
            Lifetime::Drmm => Tied::Drmm(dev.alloc(value)?),
            Lifetime::DevmEverywhere => Tied::Devm(Devres::new(bound, value)?),
        })
    }
}

impl<T: Send + Sync + 'static> Tied<T> {
    /// Runs `f` on the value, or returns `None` if the binding that owned it has ended (a
    /// refusal the trace places at the caller's line).
    #[track_caller]
    pub(crate) fn with<D, R>(&self, dev: &LogicalDevice<D>, f: impl FnOnce(&T) -> R) -> Option<R> {
        match self {
            // The device is borrowed, so its list (and this entry) is alive; an error would
            // mean a release action reading an entry already released: treat as gone.
            Tied::Drmm(m) => m.get(dev).ok().map(f),
            Tied::Devm(d) => d.try_access_with(f),
        }
    }
}
