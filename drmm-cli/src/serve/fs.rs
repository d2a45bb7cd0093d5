//! The file system: a root directory with the card file `card0` and the `control` file.
//!
//! Layout of `card0` (each open file is a vgpu client with one mapped buffer object):
//!
//! * bytes `0..BO_SIZE`: the file's buffer, read through the unplug gate (`read(2)`); after
//!   the unplug every read that starts there fails with `ENODEV`;
//! * bytes `MAP_OFFSET..MAP_OFFSET + BO_SIZE`: the mapping window (DRM's fake mmap offset):
//!   what `mmap` at `MAP_OFFSET` shows. After the unplug it reads as zeros (the dummy page),
//!   never as an error: an error there would kill the mapping process with `SIGBUS`.
//!
//! The kernel sends the same READ for `read(2)` and for a page fault, so the offset is what
//! tells them apart. Readahead is off so that a fault reads its own page only.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use drmm::Device;
use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use vgpu::{Client, Gpu};

/// Size of a buffer object (the driver's default).
pub(crate) const BO_SIZE: u64 = 64 * 1024;
/// Where the mapping window starts in `card0`.
pub(crate) const MAP_OFFSET: u64 = BO_SIZE;
/// The card file's inode.
pub(crate) const CARD: INodeNo = INodeNo(2);
const CONTROL: INodeNo = INodeNo(3);

/// `_IOW('V', 1, u32)`: submit a work item that fills the file's buffer with the value.
pub(crate) const IOCTL_SUBMIT: u32 = ioc(1, 1);
/// `_IOR('V', 2, u32)`: the first word of the file's buffer, read through the gate.
pub(crate) const IOCTL_READ: u32 = ioc(2, 2);

/// `_IOC(dir, 'V', nr, 4)`: FUSE passes fixed-size arguments only (no pointers).
const fn ioc(dir: u32, nr: u32) -> u32 {
    (dir << 30) | (4 << 16) | ((b'V' as u32) << 8) | nr
}

/// What the file system asks of the serving loop.
#[derive(Debug)]
pub(crate) enum Ask {
    /// Hot-unplug the card (a write to `control`).
    Unplug,
    /// Drop the card's cached mapping window (after a submit changed the buffer), then say so.
    Invalidate(Sender<()>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state the file system shares with the serving loop.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The card; `None` once unplugged.
    pub(crate) card: Mutex<Option<Device<Gpu>>>,
    /// Open card files by file handle, with the process that opened them.
    pub(crate) files: Mutex<BTreeMap<u64, (Client, u32)>>,
    pub(crate) unplugged: AtomicBool,
    next_fh: AtomicU64,
    ask: Mutex<Sender<Ask>>,
}

impl Shared {
    pub(crate) fn new(card: Device<Gpu>, ask: Sender<Ask>) -> Arc<Shared> {
        Arc::new(Shared {
            card: Mutex::new(Some(card)),
            files: Mutex::new(BTreeMap::new()),
            unplugged: AtomicBool::new(false),
            next_fh: AtomicU64::new(1),
            ask: Mutex::new(ask),
        })
    }

    fn ask(&self, ask: Ask) {
        let _ = lock(&self.ask).send(ask);
    }

    /// Closes file `fh` (FUSE RELEASE, or the end of the connection).
    pub(crate) fn close(&self, fh: u64) {
        let Some((client, pid)) = lock(&self.files).remove(&fh) else {
            return;
        };
        let closed = client.close();
        println!(
            "closed file {fh} (pid {pid}): {} buffer(s){}",
            closed.buffers,
            if closed.last {
                ", the card's last reference"
            } else {
                ""
            }
        );
    }
}

/// The FUSE file system of one card.
#[derive(Debug)]
pub(crate) struct CardFs {
    pub(crate) shared: Arc<Shared>,
}

const TTL: Duration = Duration::from_secs(1);

fn attr(ino: INodeNo) -> FileAttr {
    let (kind, size, perm, nlink) = match ino {
        INodeNo::ROOT => (FileType::Directory, 0, 0o755, 2),
        // The size never changes, even after the unplug: a smaller size would truncate the
        // page cache under a mapping, and the next fault would be a SIGBUS.
        CARD => (FileType::RegularFile, MAP_OFFSET + BO_SIZE, 0o666, 1),
        _ => (FileType::RegularFile, 0, 0o666, 1),
    };
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm,
        nlink,
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn errno(e: &vgpu::Error) -> Errno {
    match e {
        vgpu::Error::Unplugged | vgpu::Error::Canceled => Errno::ENODEV,
        vgpu::Error::NoBuffer(_) | vgpu::Error::NotMapped(_) => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

impl Filesystem for CardFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Mappings of a direct-I/O file (Linux 6.6+); without it, `mmap` of `card0` fails.
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_err()
        {
            eprintln!("drmm serve: this kernel cannot map direct-I/O files: mmap will fail");
        }
        // Below a page: no readahead, so that a page fault reads its own page only.
        let _ = config.set_max_readahead(1);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match name.to_str() {
            Some("card0") if parent == INodeNo::ROOT => CARD,
            Some("control") if parent == INodeNo::ROOT => CONTROL,
            _ => return reply.error(Errno::ENOENT),
        };
        reply.entry(&TTL, &attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT | CARD | CONTROL => reply.attr(&TTL, &attr(ino)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (CARD, FileType::RegularFile, "card0"),
            (CONTROL, FileType::RegularFile, "control"),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == CONTROL {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        if ino != CARD {
            return reply.error(Errno::ENOENT);
        }
        let card = lock(&self.shared.card).clone();
        let Some(card) = card else {
            return reply.error(Errno::ENODEV);
        };
        let fh = self.shared.next_fh.fetch_add(1, Ordering::Relaxed);
        let client = Client::open(&card, fh as usize).and_then(|mut c| {
            let bo = c.create_bo()?;
            c.map(bo)?;
            Ok(c)
        });
        drop(card);
        match client {
            Ok(client) => {
                lock(&self.shared.files).insert(fh, (client, req.pid()));
                println!("opened file {fh} (pid {})", req.pid());
                // Direct I/O: `read(2)` always reaches the driver, the page cache never hides
                // an unplug from it. Mappings still go through the page cache.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino == CONTROL {
            let state: &[u8] = if self.shared.unplugged.load(Ordering::Acquire) {
                b"unplugged\n"
            } else {
                b"plugged\n"
            };
            let start = (offset as usize).min(state.len());
            return reply.data(&state[start..]);
        }
        let files = lock(&self.shared.files);
        let Some((client, _)) = files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let end = MAP_OFFSET + BO_SIZE;
        if offset >= end {
            return reply.data(&[]);
        }
        let window = offset >= MAP_OFFSET;
        // A read never crosses into the window: `read(2)` and faults stay apart.
        let limit = if window { end } else { MAP_OFFSET };
        let mut buf = vec![0u8; size.min((limit - offset) as u32) as usize];
        let at = (offset - if window { MAP_OFFSET } else { 0 }) as usize;
        let card = client.card();
        match card.enter() {
            Some(_inside) => match client.read_at(1, at, &mut buf) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(errno(&e)),
            },
            // The dummy page: a mapping keeps working after the unplug.
            None if window => reply.data(&buf),
            None => reply.error(Errno::ENODEV),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let text = std::str::from_utf8(data).map(str::trim);
        if ino == CONTROL {
            return match text {
                Ok("unplug") => {
                    self.shared.ask(Ask::Unplug);
                    reply.written(data.len() as u32)
                }
                _ => reply.error(Errno::EINVAL),
            };
        }
        let Ok(value) = text.unwrap_or("").parse::<u32>() else {
            // Checked after the gate would be nicer for ENODEV, but a malformed request is
            // malformed on any device.
            return reply.error(Errno::EINVAL);
        };
        match self.submit(fh.0, value) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        if ino != CARD {
            return reply.error(Errno::ENOTTY);
        }
        match cmd {
            IOCTL_SUBMIT => {
                let Ok(bytes) = <[u8; 4]>::try_from(in_data) else {
                    return reply.error(Errno::EINVAL);
                };
                match self.submit(fh.0, u32::from_ne_bytes(bytes)) {
                    Ok(()) => reply.ioctl(0, &[]),
                    Err(e) => reply.error(e),
                }
            }
            IOCTL_READ => {
                let files = lock(&self.shared.files);
                let Some((client, _)) = files.get(&fh.0) else {
                    return reply.error(Errno::EBADF);
                };
                let Some(_inside) = client.card().enter() else {
                    return reply.error(Errno::ENODEV);
                };
                match client.read(1) {
                    Ok(v) => reply.ioctl(0, &v.to_ne_bytes()),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            _ => reply.error(Errno::ENOTTY),
        }
    }

    // Shells open `control` with O_TRUNC (`echo unplug > control`): accept and ignore any
    // change; the card's size never changes (see `attr`).
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match ino {
            INodeNo::ROOT | CARD | CONTROL => reply.attr(&TTL, &attr(ino)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
        if fh.0 != 0 {
            self.shared.close(fh.0);
        }
    }
}

impl CardFs {
    /// Submits a work item on file `fh` and waits for it; ENODEV once the card is unplugged.
    fn submit(&self, fh: u64, value: u32) -> Result<(), Errno> {
        let fence = {
            let mut files = lock(&self.shared.files);
            let Some((client, _)) = files.get_mut(&fh) else {
                return Err(Errno::EBADF);
            };
            client.submit(1, value, None).map_err(|e| errno(&e))?
        };
        fence.wait().map_err(|e| errno(&e))?;
        // The mapping window caches the old contents: drop them before the submit returns, so
        // that the submitter's mapping shows its work. Not on this thread: the invalidation
        // may wait for a page fault's READ, which another FUSE thread serves.
        let (done, dropped) = std::sync::mpsc::channel();
        self.shared.ask(Ask::Invalidate(done));
        let _ = dropped.recv_timeout(Duration::from_secs(5));
        Ok(())
    }
}
