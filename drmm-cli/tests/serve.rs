//! `drmm serve` with real processes in front of the driver, in the style of IGT's
//! `core_hotunplug`: a `drmm serve` process, and Python clients that open, map and keep the
//! card across a hot-unplug.
//!
//! Where `/dev/fuse` does not exist, every test prints `SKIPPED: no /dev/fuse` and returns
//! (count it as skipped, not passed). Where it exists, a failing mount fails the test with the
//! server's reason.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Must match the server's layout: the mapping window starts after the 64 KiB buffer.
const MAP_OFFSET: usize = 64 * 1024;
const BO_SIZE: usize = 64 * 1024;
const WAIT: Duration = Duration::from_secs(20);

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        true
    } else {
        println!("SKIPPED: no /dev/fuse");
        false
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drmm-serve-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Lazily detaches `dir` if it is still a mount point; never fails.
fn detach(dir: &Path) {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.to_str().unwrap()));
    if mounted {
        let ok = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(dir).status();
        }
    }
}

fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.to_str().unwrap()))
}

/// Kills the whole test binary (after detaching its mounts) if a test hangs.
fn watchdog(dirs: Vec<PathBuf>, secs: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("watchdog: a serve test ran longer than {secs} s");
        for d in &dirs {
            detach(d);
        }
        std::process::exit(101);
    });
}

/// A running `drmm serve` process and the lines it printed.
struct Server {
    child: Child,
    dir: PathBuf,
    trace: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    rx: Receiver<String>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let trace = dir.with_extension(format!("{n}.jsonl"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_drmm"))
            .arg("serve")
            .arg(dir)
            .arg("--trace")
            .arg(&trace)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn drmm serve");
        let (tx, rx) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let all = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            dir: dir.to_owned(),
            trace,
            lines,
            rx,
        };
        if server.wait_line("serving").is_none() {
            let _ = server.child.kill();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut err);
            panic!("drmm serve did not start (is FUSE mountable here?): {err}");
        }
        server
    }

    /// Waits for a line containing `what`.
    fn wait_line(&mut self, what: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.contains(what) => return Some(l),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn card(&self) -> PathBuf {
        self.dir.join("card0")
    }

    fn unplug(&self) {
        std::fs::write(self.dir.join("control"), "unplug\n").expect("write control");
    }

    /// Waits for the server to exit; panics after [`WAIT`].
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(50));
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "drmm serve did not exit; it printed:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        detach(&self.dir);
        // Kept when the test fails, to be read.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.trace);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A Python process holding the card file open (and its buffer mapped), driven line by line.
const CLIENT: &str = r#"
import errno, fcntl, mmap, os, struct, sys
SUBMIT, READ = 0x40045601, 0x80045602
MAP_OFFSET, BO_SIZE = int(sys.argv[2]), int(sys.argv[3])
fd = os.open(sys.argv[1], os.O_RDWR)
m = None
def attempt(f):
    try:
        return str(f())
    except OSError as e:
        return errno.errorcode[e.errno]
def say(*a):
    print(*a, flush=True)
say("opened")
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "submit":
        say("submit", attempt(lambda: fcntl.ioctl(fd, SUBMIT, struct.pack("I", int(cmd[1]))) and "ok"))
    elif cmd[0] == "ioctl":
        say("ioctl", attempt(lambda: struct.unpack("I", fcntl.ioctl(fd, READ, bytes(4)))[0]))
    elif cmd[0] == "read":
        say("read", attempt(lambda: struct.unpack("I", os.pread(fd, 4, 0))[0]))
    elif cmd[0] == "write":
        say("write", attempt(lambda: os.write(fd, cmd[1].encode())))
    elif cmd[0] == "map":
        m = mmap.mmap(fd, BO_SIZE, mmap.MAP_SHARED, mmap.PROT_READ, offset=MAP_OFFSET)
        say("map", struct.unpack("I", m[0:4])[0])
    elif cmd[0] == "touch":
        # Every page of the mapping, the never-faulted ones too: a SIGBUS kills us here.
        words = set(struct.unpack("I", m[i:i + 4])[0] for i in range(0, BO_SIZE, 4096))
        say("touch", ",".join(str(w) for w in sorted(words)))
    elif cmd[0] == "close":
        if m is not None:
            m.close()
        os.close(fd)
        say("close", "ok")
    elif cmd[0] == "exit":
        break
"#;

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn open(card: &Path) -> Client {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(CLIENT)
            .arg(card)
            .arg(MAP_OFFSET.to_string())
            .arg(BO_SIZE.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut c = Client {
            child,
            stdin,
            stdout,
        };
        assert_eq!(c.line(), "opened");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l.trim().to_owned()
    }

    /// Sends a command; returns the reply after its name.
    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        let l = self.line();
        let name = cmd.split(' ').next().unwrap();
        let status = if l.is_empty() {
            use std::os::unix::process::ExitStatusExt;
            let s = self.child.wait().unwrap();
            match s.signal() {
                Some(7) => "killed by SIGBUS".to_owned(),
                Some(sig) => format!("killed by signal {sig}"),
                None => format!("exited with {s}"),
            }
        } else {
            String::new()
        };
        l.strip_prefix(name)
            .unwrap_or_else(|| panic!("`{cmd}`: the client said {l:?} {status}"))
            .trim()
            .to_owned()
    }

    fn exit(mut self) -> ExitStatus {
        let _ = writeln!(self.stdin, "exit");
        self.child.wait().unwrap()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A short client: opens, submits `value`, reads it back through the ioctl and `read(2)`.
fn healthcheck(server: &Server, value: u32) {
    let mut c = Client::open(&server.card());
    assert_eq!(c.ask(&format!("submit {value}")), "ok");
    assert_eq!(c.ask("ioctl"), value.to_string());
    assert_eq!(c.ask("read"), value.to_string());
    assert_eq!(c.ask("close"), "ok");
    assert!(c.exit().success());
}

fn assert_released(server: &mut Server) {
    let status = server.wait_exit();
    let out = server.output();
    assert!(status.success(), "drmm serve exited with {status}:\n{out}");
    assert!(out.contains("card0 released, nothing leaked"), "{out}");
    assert!(out.contains("mode config cleaned up"), "{out}");
    // The trace of the run passes the checker (every list released, newest first).
    let trace = &server.trace;
    let check = Command::new(env!("CARGO_BIN_EXE_drmm"))
        .args(["trace", "check"])
        .arg(trace)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "drmm trace check {}: {}{}",
        trace.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn unplug_while_idle_then_a_fresh_serve_works() {
    if !fuse_available() {
        return;
    }
    let dir = scratch("idle");
    watchdog(vec![dir.clone()], 120);
    let mut first = Server::start(&dir);
    healthcheck(&first, 7);
    first.unplug();
    assert_released(&mut first);
    assert!(!is_mounted(&dir), "the mount is gone");
    drop(first);

    // A fresh device on the same directory works, and this time SIGUSR1 unplugs it.
    let mut second = Server::start(&dir);
    healthcheck(&second, 8);
    let pid = second.child.id();
    assert!(
        Command::new("kill")
            .args(["-USR1", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_released(&mut second);
    assert!(!is_mounted(&dir), "the mount is gone");
}

#[test]
fn hot_unplug_with_a_file_open_and_a_buffer_mapped() {
    if !fuse_available() {
        return;
    }
    let dir = scratch("hot");
    watchdog(vec![dir.clone()], 120);
    let mut server = Server::start(&dir);
    let mut client = Client::open(&server.card());
    assert_eq!(client.ask("submit 42"), "ok");
    assert_eq!(client.ask("map"), "42", "the mapping shows the buffer");
    // A second submit reaches the mapping too (the window is invalidated).
    assert_eq!(client.ask("submit 43"), "ok");
    assert_eq!(client.ask("touch"), "43");

    // A way into the mount that outlives the detach: the directory, opened before.
    let root = std::fs::File::open(&dir).unwrap();
    server.unplug();
    server
        .wait_line("waiting for the last close")
        .expect("the unplug completes with a file open");
    let through_root = PathBuf::from(format!("/proc/self/fd/{}/card0", root.as_raw_fd()));
    assert_eq!(
        std::fs::File::open(through_root)
            .map(drop)
            .unwrap_err()
            .raw_os_error(),
        Some(19),
        "an open that reaches the server after the unplug gets ENODEV"
    );
    drop(root);
    assert!(server.running(), "the server waits for the last close");
    assert!(
        std::fs::File::open(server.card()).is_err(),
        "no new open after the unplug"
    );
    assert_eq!(client.ask("read"), "ENODEV");
    assert_eq!(client.ask("ioctl"), "ENODEV");
    assert_eq!(client.ask("submit 1"), "ENODEV");
    assert_eq!(client.ask("write 5"), "ENODEV");
    // Every page of the mapping reads, as the dummy (zero) page: no SIGBUS.
    assert_eq!(client.ask("touch"), "0");
    assert!(server.running(), "the open file keeps the device");
    assert_eq!(client.ask("close"), "ok");
    assert_released(&mut server);
    assert!(!is_mounted(&dir), "the mount is gone");
    assert!(client.exit().success(), "the client was not killed");
    // The trace shows the client's file: opened, closed after the unplug, the last reference.
    let trace = std::fs::read_to_string(&server.trace).unwrap();
    let ops: Vec<&str> = trace
        .lines()
        .filter_map(|l| l.split("\"op\":\"").nth(1)?.split('"').next())
        .filter(|op| ["OPEN", "UNPLUG", "CLOSE", "LAST_REF"].contains(op))
        .collect();
    assert_eq!(ops, ["OPEN", "UNPLUG", "CLOSE", "LAST_REF"], "{trace}");
}

#[test]
fn late_close_releases_the_old_device_and_leaves_the_new_one() {
    if !fuse_available() {
        return;
    }
    let dir = scratch("late");
    watchdog(vec![dir.clone()], 120);
    let mut old = Server::start(&dir);
    let mut stale = Client::open(&old.card());
    assert_eq!(stale.ask("map"), "0");
    old.unplug();
    old.wait_line("waiting for the last close").unwrap();

    // A new device on the same directory, with a file open on it.
    let mut new = Server::start(&dir);
    let mut fresh = Client::open(&new.card());
    assert_eq!(fresh.ask("submit 9"), "ok");

    // The late close: the old device releases, the new one is untouched.
    assert_eq!(stale.ask("close"), "ok");
    assert_released(&mut old);
    assert!(new.running());
    assert!(is_mounted(&dir), "the new mount stays");
    assert_eq!(fresh.ask("ioctl"), "9");
    assert_eq!(fresh.ask("close"), "ok");
    healthcheck(&new, 10);
    new.unplug();
    assert_released(&mut new);
}

#[test]
fn a_client_killed_while_holding_the_file_still_lets_the_device_release() {
    if !fuse_available() {
        return;
    }
    let dir = scratch("kill");
    watchdog(vec![dir.clone()], 120);
    let mut server = Server::start(&dir);
    let mut client = Client::open(&server.card());
    assert_eq!(client.ask("submit 3"), "ok");
    assert_eq!(client.ask("map"), "3");
    server.unplug();
    server.wait_line("waiting for the last close").unwrap();
    assert!(server.running());
    client.child.kill().unwrap(); // SIGKILL: the kernel closes the file and the mapping
    let _ = client.child.wait();
    assert_released(&mut server);
}

#[test]
fn unmounting_from_outside_unplugs_and_releases() {
    if !fuse_available() {
        return;
    }
    let dir = scratch("umount");
    watchdog(vec![dir.clone()], 120);
    let mut server = Server::start(&dir);
    healthcheck(&server, 5);
    let ok = Command::new("umount")
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
        || Command::new("fusermount3")
            .arg("-u")
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "umount {}", dir.display());
    assert_released(&mut server);
    assert!(server.output().contains("unmounted from outside"));
}
