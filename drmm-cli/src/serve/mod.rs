//! `drmm serve DIR`: the virtual GPU as a file that real processes open, read, write, map and
//! keep across a hot-unplug.
//!
//! `DIR/card0` is the card: each open is a vgpu client (a drmm `File`) with one mapped buffer,
//! and each close (FUSE RELEASE) drops it. Reads, writes and ioctls enter the unplug gate. A
//! write of `unplug` to `DIR/control`, or SIGUSR1 (SIGINT, SIGTERM), hot-unplugs the card:
//! the gate closes, the page cache of `card0` is dropped, the mount is lazily detached, and
//! the process exits once the last open file is closed, printing what was released. See
//! [`fs`] for the file layout and what a mapping shows after the unplug.

mod fs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::thread;

use fuser::{MountOption, Notifier, Session as Mount};
use vgpu::{Binding, Event, Journal, VgpuDriver};

use fs::{Ask, CARD, CardFs, MAP_OFFSET, Shared};

/// Options of `drmm serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The directory to mount the card on (created if missing).
    dir: PathBuf,
    /// Record the drmm trace (JSON lines) to FILE [default: $DRMM_TRACE, if set].
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
}

/// The signals that request the unplug.
const UNPLUG_SIGNALS: [libc::c_int; 3] = [libc::SIGUSR1, libc::SIGINT, libc::SIGTERM];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in UNPLUG_SIGNALS {
        // SAFETY: `set` is initialised and `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set
}

/// Blocks the unplug signals in this thread and in every thread it starts later, so that only
/// the signal thread (`sigwait`) receives them: no handler, no async-signal-safety concerns.
fn block_signals() {
    let set = signal_set();
    // SAFETY: `set` is a valid sigset_t; a null old set is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Runs the server until the card is unplugged and its last file closed: 0 when everything
/// was released, 1 if the driver's journal reports a leak, 2 if it could not start.
pub(crate) fn run(args: ServeArgs) -> ExitCode {
    block_signals();
    let _trace = match &args.trace {
        Some(path) => drmm::trace::record_to(path).map(Some),
        None => drmm::trace::init_from_env(),
    };
    let _trace = match _trace {
        Ok(t) => t,
        Err(e) => {
            eprintln!("drmm serve: trace: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("drmm serve: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: &ServeArgs) -> Result<bool, String> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let journal = Journal::new();
    let bus = drmm::Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    pdev.bind(Arc::new(VgpuDriver::new(
        Default::default(),
        journal.clone(),
    )))
    .map_err(|e| format!("probe: {e}"))?;
    let card = pdev
        .with_bound(|b| b.driver_data::<Binding>().map(|d| d.card().clone()))
        .ok()
        .flatten()
        .ok_or("probe: no card")?;
    let (tx, rx) = mpsc::channel();
    let shared = Shared::new(card, tx.clone());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("drmm-vgpu".into()),
        MountOption::Subtype("drmm".into()),
        MountOption::NoAtime,
    ];
    // Two threads: one may wait (a submit for its invalidation, the unplug for the gate)
    // while the other serves page faults.
    config.n_threads = Some(2);
    let fs = CardFs {
        shared: shared.clone(),
    };
    let fuse = match Mount::new(fs, dir, &config) {
        Ok(s) => s,
        Err(e) => {
            // Nobody can reach the card: unplug it so that it releases.
            drop(shared.card.lock().map(|mut c| c.take()));
            let _ = pdev.remove();
            return Err(format!("cannot mount FUSE on {}: {e}", dir.display()));
        }
    };
    let notifier = fuse.notifier();
    println!(
        "serving {}/card0 (pid {}); unplug with `echo unplug > {}/control` or `kill -USR1 {}`",
        dir.display(),
        std::process::id(),
        dir.display(),
        std::process::id()
    );
    let mark = journal.events().len();
    thread::Builder::new()
        .name("serve-signals".into())
        .spawn(move || wait_signals(&tx))
        .map_err(|e| e.to_string())?;
    let control = {
        let (shared, pdev, journal, dir) =
            (shared.clone(), pdev.clone(), journal.clone(), dir.clone());
        thread::Builder::new()
            .name("serve-control".into())
            .spawn(move || control_loop(&rx, &notifier, &shared, &pdev, &journal, &dir))
            .map_err(|e| e.to_string())?
    };
    let ended = fuse.run();
    // The connection is gone: the kernel closed every file, whether or not each RELEASE
    // reached us (the last one races with the end of the connection).
    let left: Vec<u64> = shared
        .files
        .lock()
        .map(|f| f.keys().copied().collect())
        .unwrap_or_default();
    for fh in left {
        shared.close(fh);
    }
    if !shared.unplugged.swap(true, Ordering::AcqRel) {
        // Unmounted from outside (`umount`, `fusermount3 -u`): the device goes too.
        println!("unmounted from outside: unplugging");
        drop(shared.card.lock().map(|mut c| c.take()));
        let _ = pdev.remove();
    }
    drop(control);
    if let Err(e) = ended {
        eprintln!("drmm serve: the FUSE loop ended with: {e}");
    }
    let (events, _) = journal.events_since(mark);
    println!("released:");
    for e in events {
        if let Event::Released { owner, what } = e {
            println!("  {:<8} {what}", owner.as_str());
        }
    }
    let leaks = journal.leaks();
    if leaks.is_empty() {
        println!("card0 released, nothing leaked");
        Ok(true)
    } else {
        println!("leaked: {leaks:?}");
        Ok(false)
    }
}

/// Waits for the unplug signals (blocked everywhere) and asks for the unplug.
fn wait_signals(tx: &mpsc::Sender<Ask>) {
    let set = signal_set();
    loop {
        let mut sig = 0;
        // SAFETY: `set` is a valid sigset_t and `sig` a writable int.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 && tx.send(Ask::Unplug).is_err() {
            return;
        }
    }
}

/// Serves the file system's requests that must not run on the FUSE thread: the unplug waits
/// for readers inside the gate, and a page-cache invalidation may wait for a READ in flight.
fn control_loop(
    rx: &Receiver<Ask>,
    notifier: &Notifier,
    shared: &Shared,
    pdev: &drmm::BusDevice,
    journal: &Journal,
    dir: &std::path::Path,
) {
    while let Ok(ask) = rx.recv() {
        match ask {
            Ask::Invalidate(done) => {
                if !shared.unplugged.load(Ordering::Acquire) {
                    let _ = notifier.inval_inode(CARD, MAP_OFFSET as i64, 0);
                }
                let _ = done.send(());
            }
            Ask::Unplug => {
                if shared.unplugged.swap(true, Ordering::AcqRel) {
                    continue;
                }
                let open = shared.files.lock().map(|f| f.len()).unwrap_or(0);
                println!("unplug requested ({open} file(s) open)");
                journal.milestone("unplug of card0 (drmm serve)");
                drop(shared.card.lock().map(|mut c| c.take()));
                let _ = pdev.remove();
                // Cached pages would hide the unplug; mapped pages fault again, to the dummy
                // page. Length 0: to the end of the file.
                let _ = notifier.inval_inode(CARD, 0, 0);
                detach(dir);
                println!("card0 unplugged; mount detached; waiting for the last close");
            }
        }
    }
}

/// Lazily detaches the mount (`umount -l`): open files and mappings keep working, new lookups
/// fail, and the connection ends with the last close.
fn detach(dir: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `path` is a valid NUL-terminated string.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        // Not root: the setuid fusermount3 does the same.
        let status = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(dir)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("drmm serve: cannot detach {}: {e}", dir.display());
        }
    }
}
