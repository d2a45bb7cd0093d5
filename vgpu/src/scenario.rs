//! The hot-unplug story, with client threads on a schedule drawn from a seed: probe, open and
//! map, work, a hot-unplug while a work item is inside the gate, work after the unplug, and
//! the clients closing one by one until the last close releases the card.
//!
//! Client threads do the work (each its own file, buffers and mappings); the scenario tells
//! them what to do next, one step at a time, so that for a given seed the story is always the
//! same. The work queue, the interrupt and the unplug still run concurrently with them.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use drmm::{Bus, Device, EntryInfo};

use crate::client::{Client, Closed, Fence, Stall};
use crate::error::Error;
use crate::gpu::{Binding, Config, Gpu, VgpuDriver};
use crate::journal::{Event, Incident, Journal, Owner};
use crate::rng::Rng;
use crate::tied::Lifetime;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client threads (at least 1).
    pub clients: usize,
    /// Buffer objects per client (at least 1).
    pub buffers: usize,
    /// Work items per client (at least 1).
    pub work: usize,
    /// Fixes the schedule, the unplug moment and the values written.
    pub seed: u64,
    /// Who owns the userspace-visible state.
    pub lifetime: Lifetime,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 3,
            buffers: 2,
            work: 3,
            seed: 1,
            lifetime: Lifetime::Drmm,
        }
    }
}

/// Where the story goes: the CLI prints it, tests collect or ignore it.
pub trait Story {
    /// The number of client turns the run will take (for a progress bar).
    fn plan(&mut self, turns: usize) {
        let _ = turns;
    }
    /// A new step of the story.
    fn step(&mut self, number: usize, title: &str);
    /// A line of the current step.
    fn line(&mut self, text: &str);
    /// One client turn is done.
    fn tick(&mut self) {}
}

/// A story nobody reads.
#[derive(Debug, Default)]
pub struct Silent;

impl Story for Silent {
    fn step(&mut self, _: usize, _: &str) {}
    fn line(&mut self, _: &str) {}
}

/// A story kept in memory: `"N. title"` for steps, the lines as they are.
#[derive(Debug, Default)]
pub struct Collected(pub Vec<String>);

impl Story for Collected {
    fn step(&mut self, number: usize, title: &str) {
        self.0.push(format!("{number}. {title}"));
    }
    fn line(&mut self, text: &str) {
        self.0.push(text.to_owned());
    }
}

/// The step numbers of the story.
pub mod steps {
    /// Probe: the devres and drmm lists are filled.
    pub const PROBE: usize = 1;
    /// Registration: the card can be opened.
    pub const REGISTER: usize = 2;
    /// Clients open the card, create and map buffers.
    pub const OPEN: usize = 3;
    /// Clients submit work.
    pub const WORK: usize = 4;
    /// The hot-unplug, and the unbind that revokes the hardware.
    pub const UNPLUG: usize = 5;
    /// Clients after the unplug.
    pub const AFTER: usize = 6;
    /// Clients close one by one; the last close releases the card.
    pub const CLOSE: usize = 7;
}

/// A list, as probe left it, and when it was released.
#[derive(Debug, Clone)]
pub struct ListSummary {
    /// `devres list of vgpu.0` or `drmm list of card0`.
    pub name: String,
    /// Its entries after probe, newest first.
    pub entries: Vec<EntryInfo>,
    /// When it was released.
    pub released: String,
}

/// What happened to the work items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkStats {
    /// Submissions attempted.
    pub submitted: usize,
    /// Items that ran (including the one in flight at the unplug).
    pub done: usize,
    /// Items inside the gate when the unplug began (they finished).
    pub in_flight_at_unplug: usize,
    /// Items queued before the unplug that never ran.
    pub canceled: usize,
    /// Submissions refused after the unplug.
    pub refused: usize,
    /// Buffers that did not read back what their work item wrote (never, unless broken).
    pub wrong_reads: usize,
}

/// What a client saw after the unplug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The client.
    pub client: usize,
    /// The call (`submit work 3`, `read bo 1`, `query display`, `wait work 2`).
    pub call: String,
    /// What it returned: a value read, or the error.
    pub result: Result<u32, Error>,
}

/// Everything the story found, for the summary and the tests.
#[derive(Debug)]
pub struct Outcome {
    /// The driver's journal.
    pub journal: Arc<Journal>,
    /// The bus device's devres list.
    pub devres: ListSummary,
    /// The card's drmm list.
    pub drmm: ListSummary,
    /// Work items.
    pub work: WorkStats,
    /// The client whose work item was inside the gate at the unplug, and that item.
    pub unplug_during: (usize, usize),
    /// Every client call after the unplug, in order.
    pub after_unplug: Vec<Seen>,
    /// The client whose close released the card.
    pub last_close: usize,
    /// What was released during the last close, in order (owner, what).
    pub last_close_releases: Vec<(Owner, String)>,
    /// Objects still alive at the end, per kind, plus devres entries left on the bus device.
    pub leaks: Vec<(String, u64)>,
    /// The vblank interrupts delivered.
    pub vblanks: u64,
}

impl Outcome {
    /// The use-after-free accesses the library caught (none under drmm).
    pub fn incidents(&self) -> Vec<Incident> {
        self.journal.incidents()
    }
}

enum Cmd {
    Open(Device<Gpu>),
    Create,
    Query,
    Submit {
        handle: u32,
        value: u32,
        stall: Option<Arc<Stall>>,
    },
    Complete {
        fence: Option<Fence>,
        handle: u32,
    },
    ReadAll,
    Close,
}

enum Res {
    Opened(Result<(), Error>),
    Created(Result<u32, Error>),
    Display(Result<Vec<String>, Error>),
    Submitted(Result<Fence, Error>),
    Completed(Option<Result<u32, Error>>, Result<u32, Error>),
    Read(Vec<(u32, Result<u32, Error>)>),
    Closed(Option<Closed>),
}

/// A client thread and its command channel.
struct ClientThread {
    tx: Sender<(Cmd, Sender<Res>)>,
    thread: JoinHandle<()>,
}

impl ClientThread {
    fn spawn(id: usize, buffers: usize) -> Result<ClientThread, Error> {
        let (tx, rx) = channel();
        let thread = thread::Builder::new()
            .name(format!("client-{id}"))
            .spawn(move || client_loop(id, buffers, rx))?;
        Ok(ClientThread { tx, thread })
    }

    fn call(&self, cmd: Cmd) -> Res {
        let (tx, rx) = channel();
        self.tx
            .send((cmd, tx))
            .expect("client thread alive until the end");
        rx.recv().expect("client thread answers every command")
    }
}

fn client_loop(id: usize, buffers: usize, rx: Receiver<(Cmd, Sender<Res>)>) {
    let mut client: Option<Client> = None;
    let mut handles = Vec::with_capacity(buffers);
    for (cmd, reply) in rx {
        let res = match (cmd, client.as_mut()) {
            (Cmd::Open(card), _) => Res::Opened(Client::open(&card, id).map(|c| {
                client = Some(c);
            })),
            (Cmd::Create, Some(c)) => Res::Created(c.create_bo().and_then(|h| {
                c.map(h)?;
                handles.push(h);
                Ok(h)
            })),
            (Cmd::Query, Some(c)) => Res::Display(c.query_display()),
            (
                Cmd::Submit {
                    handle,
                    value,
                    stall,
                },
                Some(c),
            ) => Res::Submitted(c.submit(handle, value, stall)),
            (Cmd::Complete { fence, handle }, Some(c)) => {
                let waited = fence.map(|f| f.wait());
                Res::Completed(waited, c.read(handle))
            }
            (Cmd::ReadAll, Some(c)) => Res::Read(handles.iter().map(|&h| (h, c.read(h))).collect()),
            (Cmd::Close, c) => Res::Closed(
                c.is_some()
                    .then(|| client.take().map(Client::close).expect("checked")),
            ),
            (_, None) => Res::Opened(Err(Error::Unplugged)),
        };
        if reply.send(res).is_err() {
            break;
        }
    }
}

/// One turn of the work phase.
#[derive(Debug, Clone, Copy)]
enum Turn {
    Submit { client: usize, item: usize },
    Complete { client: usize, item: usize },
}

/// The work phase's turns: each client's `submit 1, complete 1, submit 2, ...` in order,
/// interleaved at random.
fn interleave(rng: &mut Rng, clients: usize, work: usize) -> Vec<Turn> {
    let mut next = vec![0usize; clients]; // per client: turns taken
    let mut left: Vec<usize> = (0..clients).collect();
    let mut turns = Vec::with_capacity(clients * work * 2);
    while !left.is_empty() {
        let i = rng.below(left.len());
        let c = left[i];
        let t = next[c];
        let item = t / 2 + 1;
        let client = c + 1;
        turns.push(if t.is_multiple_of(2) {
            Turn::Submit { client, item }
        } else {
            Turn::Complete { client, item }
        });
        next[c] += 1;
        if next[c] == work * 2 {
            left.swap_remove(i);
        }
    }
    turns
}

fn hex(v: u32) -> String {
    format!("0x{v:08x}")
}

fn shorten(type_name: &str) -> String {
    // `drmm::bus::devres::Devres<vgpu::hw::Registers>` -> `Devres<Registers>`: the last
    // path segment of the type and of its parameter.
    let last = |path: &str| path.rsplit("::").next().unwrap_or(path).to_owned();
    match type_name.split_once('<') {
        Some((outer, inner)) => format!("{}<{}>", last(outer), last(inner.trim_end_matches('>'))),
        None => last(type_name),
    }
}

/// How an entry is shown: `#3 action free_irq`.
pub fn describe(e: &EntryInfo) -> String {
    format!("#{} {} {}", e.seq(), e.kind().as_str(), shorten(e.name()))
}

/// The entries of a list, oldest first, described; mode objects get their names (an
/// allocation is named after its type: the n-th `ModeObject` is the n-th of
/// [`MODE_OBJECTS`](crate::MODE_OBJECTS), in the order probe makes them).
pub fn describe_all(newest_first: &[EntryInfo]) -> Vec<String> {
    let mut objects = crate::MODE_OBJECTS.iter();
    newest_first
        .iter()
        .rev()
        .map(|e| {
            let d = describe(e);
            match e.name().ends_with("ModeObject>") || e.name().ends_with("ModeObject") {
                true => match objects.next() {
                    Some((name, _)) => format!("{d} ({name})"),
                    None => d,
                },
                false => d,
            }
        })
        .collect()
}

/// How a journal event is shown.
pub fn event_line(e: &Event) -> String {
    match e {
        Event::Released { owner, what } => format!("[{}] {what}", owner.as_str()),
        Event::Note(what) => what.clone(),
        Event::Caught(i) => format!(
            "{}: CAUGHT use after free of {} (after the {})",
            i.by, i.what, i.after
        ),
    }
}

/// The story's state while it runs.
struct Run<'a> {
    story: &'a mut dyn Story,
    journal: Arc<Journal>,
    printed: usize,
    clients: Vec<ClientThread>,
    /// Every client call after the unplug (`None` before it).
    after_unplug: Option<Vec<Seen>>,
    stats: WorkStats,
    /// Per client (from 1): buffer handles, values of work items and their fences (from 1).
    handles: Vec<Vec<u32>>,
    values: Vec<Vec<u32>>,
    fences: Vec<Vec<Option<Fence>>>,
}

impl Run<'_> {
    fn say(&mut self, text: &str) {
        self.story.line(text);
    }

    /// Tells what the driver journaled since last time (releases, caught accesses).
    fn drain(&mut self) -> Vec<Event> {
        let (events, next) = self.journal.events_since(self.printed);
        self.printed = next;
        for e in &events {
            match e {
                Event::Note(_) => {}
                // Said by the client that tried: in place of what it would have read.
                Event::Caught(_) => self.story.line(&event_line(e)),
                Event::Released { .. } => self.story.line(&format!("  {}", event_line(e))),
            }
        }
        events
    }

    fn seen(&mut self, client: usize, call: String, result: Result<u32, Error>) {
        if let Some(log) = &mut self.after_unplug {
            log.push(Seen {
                client,
                call,
                result,
            });
        }
    }

    fn turn(&mut self, client: usize, cmd: Cmd) -> Res {
        let r = self.clients[client - 1].call(cmd);
        self.story.tick();
        r
    }

    /// The buffer work item `item` of `client` fills.
    fn bo_of(&self, client: usize, item: usize) -> u32 {
        let handles = &self.handles[client];
        handles[(item - 1) % handles.len()]
    }

    /// Step 3: each client opens the card, creates and maps its buffers, looks at the display.
    fn open_all(
        &mut self,
        card: &Device<Gpu>,
        order: &[usize],
        buffers: usize,
    ) -> Result<(), Error> {
        for &c in order {
            if let Res::Opened(r) = self.turn(c, Cmd::Open(card.clone())) {
                r?;
            }
            let mut made = Vec::new();
            for _ in 0..buffers {
                if let Res::Created(r) = self.turn(c, Cmd::Create) {
                    made.push(r?);
                }
            }
            let kib = Config::default().bo_size / 1024;
            self.say(&format!(
                "client-{c}: opened card0; buffers {} created ({kib} KiB memfd each) and mapped",
                list(&made)
            ));
            self.handles[c] = made;
            if let Res::Display(r) = self.turn(c, Cmd::Query) {
                self.say(&format!("client-{c}: display: {}", r?.join(", ")));
            }
        }
        Ok(())
    }

    /// Steps 4 to 6: the schedule's turns, with the hot-unplug while the `unplug_at`-th
    /// submission is inside the gate. Returns that client and item.
    fn work(
        &mut self,
        mut schedule: Vec<Turn>,
        unplug_at: usize,
        pdev: &drmm::BusDevice,
        card: &Device<Gpu>,
    ) -> Result<(usize, usize), Error> {
        let mut unplug_during = (0, 0);
        let mut nth_submit = 0;
        let mut i = 0;
        while i < schedule.len() {
            let turn = schedule[i];
            i += 1;
            match turn {
                Turn::Submit { client, item } => {
                    let stall_here = self.after_unplug.is_none() && nth_submit == unplug_at;
                    nth_submit += 1;
                    if !stall_here {
                        self.submit(client, item, None);
                        continue;
                    }
                    // The unplug comes while this item is inside the gate.
                    let stall = Stall::new();
                    let fence = self.submit(client, item, Some(stall.clone()));
                    if fence.is_none() || !stall.wait_entered(Duration::from_secs(10)) {
                        return Err(Error::Os(
                            "the stalled work item never entered the gate".into(),
                        ));
                    }
                    self.say(&format!(
                        "client-{client}: work {item} is inside the gate (the engine is busy with it)"
                    ));
                    // Another client's next submission queues behind it before the unplug.
                    if let Some(j) = schedule[i..]
                        .iter()
                        .position(|t| matches!(t, Turn::Submit { client: c, .. } if *c != client))
                    {
                        let Turn::Submit { client: c, item: k } = schedule.remove(i + j) else {
                            unreachable!("found a submission")
                        };
                        nth_submit += 1;
                        self.submit(c, k, None);
                    }
                    unplug_during = (client, item);
                    hot_unplug(self, pdev, card, client, item, fence.as_ref())?;
                    self.stats.in_flight_at_unplug = 1;
                    self.story
                        .step(steps::AFTER, "after the unplug: clients carry on");
                    self.after_unplug = Some(Vec::new());
                }
                Turn::Complete { client, item } => self.complete(client, item),
            }
        }
        Ok(unplug_during)
    }

    fn submit(&mut self, client: usize, item: usize, stall: Option<Arc<Stall>>) -> Option<Fence> {
        let (handle, value) = (self.bo_of(client, item), self.values[client][item]);
        self.stats.submitted += 1;
        let Res::Submitted(r) = self.turn(
            client,
            Cmd::Submit {
                handle,
                value,
                stall,
            },
        ) else {
            unreachable!("a Submit answers Submitted")
        };
        match r {
            Ok(fence) => {
                self.say(&format!(
                    "client-{client}: submit work {item}: fill bo {handle} with {} -> queued",
                    hex(value)
                ));
                self.fences[client][item] = Some(fence.clone());
                Some(fence)
            }
            Err(e) => {
                self.stats.refused += 1;
                self.say(&format!(
                    "client-{client}: submit work {item} -> error: {e}"
                ));
                self.seen(client, format!("submit work {item}"), Err(e));
                None
            }
        }
    }

    /// The client waits for its work item (if it was queued) and reads its buffer back.
    fn complete(&mut self, client: usize, item: usize) {
        let (handle, value) = (self.bo_of(client, item), self.values[client][item]);
        let fence = self.fences[client][item].take();
        let queued = fence.is_some();
        let Res::Completed(waited, read) = self.turn(client, Cmd::Complete { fence, handle })
        else {
            unreachable!("a Complete answers Completed")
        };
        match waited.filter(|_| queued) {
            Some(Ok(seq)) => {
                self.stats.done += 1;
                self.seen(client, format!("wait work {item}"), Ok(seq));
                let check = match &read {
                    Ok(v) if *v == value => format!("; bo {handle} reads {} as written", hex(*v)),
                    Ok(v) => {
                        self.stats.wrong_reads += 1;
                        format!(
                            "; bo {handle} reads {}, WRONG: {} was written",
                            hex(*v),
                            hex(value)
                        )
                    }
                    Err(Error::UseAfterFree { .. }) => String::new(), // journaled: told below
                    Err(e) => format!("; reading bo {handle} -> {e}"),
                };
                self.say(&format!(
                    "client-{client}: work {item} done (fence {seq}){check}"
                ));
            }
            Some(Err(e)) => {
                self.stats.canceled += 1;
                self.seen(client, format!("wait work {item}"), Err(e.clone()));
                let still = match &read {
                    Ok(v) => format!("; bo {handle} still reads {} through its mapping", hex(*v)),
                    Err(_) => String::new(),
                };
                self.say(&format!("client-{client}: work {item} -> {e}{still}"));
            }
            None => match &read {
                // Nothing was queued: the client looks at its buffer anyway.
                Ok(v) => self.say(&format!(
                    "client-{client}: bo {handle} still readable through its mapping: {}",
                    hex(*v)
                )),
                Err(Error::UseAfterFree { .. }) => {} // journaled: told below
                Err(e) => self.say(&format!("client-{client}: read bo {handle} -> {e}")),
            },
        }
        if !queued || read.is_err() {
            self.seen(client, format!("read bo {handle}"), read);
        }
        self.drain();
    }

    /// Step 7: each client reads its mappings, looks at the display and closes. Returns the
    /// client whose close released the card, and what that close released.
    fn close_all(&mut self, order: &[usize]) -> (usize, Vec<(Owner, String)>) {
        let mut last_close = (0, Vec::new());
        for &c in order {
            if let Res::Read(reads) = self.turn(c, Cmd::ReadAll) {
                let mut ok = Vec::new();
                for (h, r) in reads {
                    self.seen(c, format!("read bo {h}"), r.clone());
                    match r {
                        Ok(v) => ok.push(format!("bo {h} = {}", hex(v))),
                        Err(Error::UseAfterFree { .. }) => {} // journaled: told below
                        Err(e) => self.say(&format!("client-{c}: read bo {h} -> {e}")),
                    }
                }
                if !ok.is_empty() {
                    self.say(&format!(
                        "client-{c}: mappings still readable: {}",
                        ok.join(", ")
                    ));
                }
                self.drain();
            }
            if let Res::Display(r) = self.turn(c, Cmd::Query) {
                match r {
                    Ok(objects) => {
                        self.seen(c, "query display".into(), Ok(objects.len() as u32));
                        self.say(&format!("client-{c}: display: {}", objects.join(", ")));
                    }
                    Err(e) => {
                        self.seen(c, "query display".into(), Err(e.clone()));
                        if !matches!(e, Error::UseAfterFree { .. }) {
                            self.say(&format!("client-{c}: query display -> {e}"));
                        }
                    }
                }
                self.drain();
            }
            if Some(&c) == order.last() {
                self.journal
                    .milestone("unbind of vgpu.0, in the last close");
            }
            if let Res::Closed(Some(closed)) = self.turn(c, Cmd::Close) {
                let refs = if closed.last {
                    "the last reference to card0: released now"
                } else {
                    "card0 still held by the other files"
                };
                self.say(&format!(
                    "client-{c}: closes its file ({} buffers); {refs}",
                    closed.buffers
                ));
                let events = self.drain();
                if closed.last {
                    let released = events
                        .into_iter()
                        .filter_map(|e| match e {
                            Event::Released { owner, what } => Some((owner, what)),
                            _ => None,
                        })
                        .collect();
                    last_close = (c, released);
                }
            }
        }
        for t in std::mem::take(&mut self.clients) {
            drop(t.tx);
            let _ = t.thread.join();
        }
        last_close
    }
}

/// Runs the story (see the module docs).
///
/// # Errors
///
/// What probe or a step that must succeed returned; a stall that never entered the gate
/// ([`Error::Os`]).
///
/// # Panics
///
/// If an option is 0.
pub fn run(opts: &Options, story: &mut dyn Story) -> Result<Outcome, Error> {
    assert!(
        opts.clients > 0 && opts.buffers > 0 && opts.work > 0,
        "clients, buffers and work must be at least 1"
    );
    let mut rng = Rng::new(opts.seed);
    let journal = Journal::new();
    let config = Config {
        lifetime: opts.lifetime,
        ..Config::default()
    };
    story.plan(opts.clients * (5 + opts.buffers + 2 * opts.work));
    let mut run = Run {
        story,
        journal: journal.clone(),
        printed: 0,
        clients: Vec::new(),
        after_unplug: None,
        stats: WorkStats::default(),
        handles: vec![Vec::new(); opts.clients + 1],
        values: Vec::new(),
        fences: vec![vec![None; opts.work + 1]; opts.clients + 1],
    };

    // 1. Probe.
    run.story.step(steps::PROBE, "probe vgpu.0");
    let bus = Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    pdev.bind(Arc::new(VgpuDriver::new(config, journal.clone())))?;
    journal.milestone("probe of vgpu.0");
    let card = pdev
        .with_bound(|b| b.driver_data::<Binding>().map(|d| d.card().clone()))?
        .ok_or(Error::Unplugged)?;
    let devres_entries = pdev.snapshot();
    let drmm_entries = card.snapshot();
    let state_on = match opts.lifetime {
        Lifetime::Drmm => "userspace-visible state on the drmm list (correct)",
        Lifetime::DevmEverywhere => "userspace-visible state on the devres list (the bug)",
    };
    run.say(&format!("vgpu driver bound, {state_on}"));
    run.say(&format!(
        "devres list of vgpu.0: {} entries, released at unbind:",
        devres_entries.len()
    ));
    for e in describe_all(&devres_entries) {
        run.say(&format!("  {e}"));
    }
    run.say(&format!(
        "drmm list of card0: {} entries, released at the last reference:",
        drmm_entries.len()
    ));
    for e in describe_all(&drmm_entries) {
        run.say(&format!("  {e}"));
    }

    // 2. Register.
    run.story.step(steps::REGISTER, "register card0");
    journal.milestone("registration of card0");
    run.say(&format!(
        "card0 registered: clients can open it ({} references: the binding's data, devm_drm_dev_init_release, the interrupt thread, the demo)",
        Device::ref_count(&card)
    ));

    // 3. Open, create, map.
    run.story
        .step(steps::OPEN, "clients open card0, create and map buffers");
    for id in 1..=opts.clients {
        run.clients.push(ClientThread::spawn(id, opts.buffers)?);
    }
    let mut order: Vec<usize> = (1..=opts.clients).collect();
    rng.shuffle(&mut order);
    run.open_all(&card, &order, opts.buffers)?;

    // 4-6. Work, with the unplug at a submission drawn from the seed.
    run.story.step(
        steps::WORK,
        &format!("clients submit work (schedule from seed {})", opts.seed),
    );
    let schedule = interleave(&mut rng, opts.clients, opts.work);
    let submits = opts.clients * opts.work;
    // Somewhere in the middle third or so: some work done before, some left after.
    let unplug_at = (submits / 3 + rng.below(submits / 2 + 1)).min(submits - 1);
    run.values = (0..=opts.clients)
        .map(|_| (0..=opts.work).map(|_| rng.next_u64() as u32).collect())
        .collect();
    let unplug_during = run.work(schedule, unplug_at, &pdev, &card)?;
    let vblanks = card.data().vblanks();
    drop(card);

    // 7. Close one by one.
    run.story.step(steps::CLOSE, "clients close one by one");
    let mut order: Vec<usize> = (1..=opts.clients).collect();
    rng.shuffle(&mut order);
    let (last_close, last_close_releases) = run.close_all(&order);

    let mut leaks: Vec<(String, u64)> = journal
        .leaks()
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    if pdev.resource_count() > 0 {
        leaks.push(("devres entry".into(), pdev.resource_count() as u64));
    }
    Ok(Outcome {
        journal: journal.clone(),
        devres: ListSummary {
            name: "devres list of vgpu.0".into(),
            entries: devres_entries,
            released: format!("at unbind (step {})", steps::UNPLUG),
        },
        drmm: ListSummary {
            name: "drmm list of card0".into(),
            entries: drmm_entries,
            released: format!(
                "at the last close, by client-{last_close} (step {})",
                steps::CLOSE
            ),
        },
        work: run.stats,
        unplug_during,
        after_unplug: run.after_unplug.take().unwrap_or_default(),
        last_close,
        last_close_releases,
        leaks,
        vblanks,
    })
}

fn list(handles: &[u32]) -> String {
    handles
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn hot_unplug(
    run: &mut Run<'_>,
    pdev: &drmm::BusDevice,
    card: &Device<Gpu>,
    client: usize,
    item: usize,
    fence: Option<&Fence>,
) -> Result<(), Error> {
    run.story.step(
        steps::UNPLUG,
        &format!("hot-unplug vgpu.0 while client-{client}'s work {item} is inside the gate"),
    );
    run.say("remove vgpu.0: the driver unplugs card0, which waits for everyone inside the gate");
    pdev.remove()?;
    run.journal.milestone("unbind of vgpu.0");
    if let Some(f) = fence {
        match f.wait() {
            Ok(seq) => run.say(&format!(
                "client-{client}'s work {item} finished inside the gate during the unplug (fence {seq})"
            )),
            Err(e) => run.say(&format!("client-{client}'s work {item} -> {e}")),
        }
    }
    run.say("unbind: the devres list revoked and released, newest first:");
    run.drain();
    run.say(&format!(
        "card0 is unplugged but alive: {} open files hold it; opens and hardware paths are refused",
        card.open_files()
    ));
    Ok(())
}
