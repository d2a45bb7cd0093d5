//! Macros that name entries after their source expression, like the kernel's `#action`.

/// Registers a release action named after its expression (`drmm_add_action`,
/// `devm_add_action`).
///
/// `add_action!(owner, action)` expands to `owner.add_action_named(NAME, action)`, where `NAME`
/// is a short form of the action's source text made at compile time
/// ([`ShortName`](crate::trace::ShortName): its first line, whitespace collapsed, at most about
/// 40 bytes, `…` when cut), so the entry's name in traces and snapshots is readable, and its
/// location is the macro's call site.
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::new(());
/// let _ = drmm::add_action!(dev, |_| println!("bye"))?;
/// assert_eq!(dev.snapshot()[0].name(), "|_| println!(\"bye\")");
/// let _ = drmm::add_action!(dev, move |_| {
///     println!("a longer action");
/// })?;
/// assert_eq!(dev.snapshot()[0].name(), "move |_| { println!(\"a longer action\");…");
/// # Ok::<(), drmm::Error>(())
/// ```
#[doc(alias = "drmm_add_action")]
#[doc(alias = "devm_add_action")]
#[macro_export]
macro_rules! add_action {
    ($owner:expr, $action:expr $(,)?) => {{
        static NAME: $crate::trace::ShortName =
            $crate::trace::ShortName::new(::core::stringify!($action));
        $owner.add_action_named(NAME.as_str(), $action)
    }};
}

/// Registers a release action named after its expression, running it at once if registering
/// fails (`drmm_add_action_or_reset`, `devm_add_action_or_reset`).
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::new(());
/// let _ = drmm::add_action_or_reset!(dev, |_| println!("bye"))?;
/// # Ok::<(), drmm::Error>(())
/// ```
#[doc(alias = "drmm_add_action_or_reset")]
#[doc(alias = "devm_add_action_or_reset")]
#[macro_export]
macro_rules! add_action_or_reset {
    ($owner:expr, $action:expr $(,)?) => {{
        static NAME: $crate::trace::ShortName =
            $crate::trace::ShortName::new(::core::stringify!($action));
        $owner.add_action_or_reset_named(NAME.as_str(), $action)
    }};
}
