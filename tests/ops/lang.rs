//! The operation language: the [`Op`]s a program is made of, their encoding in 3 bytes each
//! (the fuzzer's input, so any failing input is a replayable file) and the hand-written seed
//! programs.

/// Longest program executed (longer inputs are truncated).
pub const MAX_OPS: usize = 400;

/// One operation. Indices (`dev`, `h`, `f`, `bus`, `r`, `g`) pick among what exists, modulo
/// its count; an operation with nothing to act on is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    NewDevice,
    DrmAddAction {
        dev: u8,
        adds: bool,
    },
    DrmAddOrReset {
        dev: u8,
    },
    DrmAlloc {
        dev: u8,
    },
    DrmKzalloc {
        dev: u8,
        len: u8,
    },
    DrmBadAlloc {
        dev: u8,
        which: u8,
    },
    DrmFree {
        h: u8,
    },
    DrmRemove {
        h: u8,
    },
    DrmForeign {
        h: u8,
        dev: u8,
    },
    DrmRead {
        h: u8,
    },
    CloneRef {
        dev: u8,
    },
    DropRef {
        dev: u8,
    },
    Register {
        dev: u8,
    },
    Unplug {
        dev: u8,
    },
    Enter {
        dev: u8,
    },
    Open {
        dev: u8,
    },
    Close {
        f: u8,
    },
    FileUse {
        f: u8,
    },
    Bind {
        bus: u8,
        fail: bool,
    },
    Unbind {
        bus: u8,
    },
    RemoveBus {
        bus: u8,
    },
    DevresAction {
        bus: u8,
    },
    DevresAlloc {
        bus: u8,
    },
    DevresKzalloc {
        bus: u8,
        len: u8,
    },
    DevresFree {
        h: u8,
    },
    DevresRemove {
        h: u8,
    },
    DevresRead {
        h: u8,
    },
    DevresRealloc {
        h: u8,
        len: u8,
    },
    DevresNew {
        bus: u8,
    },
    DevresDrop {
        r: u8,
    },
    DevresAccess {
        r: u8,
    },
    OpenGroup {
        bus: u8,
    },
    CloseGroup {
        g: u8,
    },
    ReleaseGroup {
        g: u8,
    },
    RemoveGroup {
        g: u8,
    },
    /// A drmm action that re-enters its own device when it runs: releases another entry of
    /// the device early through the handle it owns (`kfree`/`drmm_release_action`, answer
    /// logged), then adds a value entry.
    DrmReentrant {
        dev: u8,
        h: u8,
    },
    /// A `Devres` whose value owns another `Devres` of the same binding.
    DevresNested {
        bus: u8,
    },
    /// A drmm-managed value whose `Drop` re-enters another logical device (an older one, so
    /// references never form a cycle): releases an entry of it early through the handle it
    /// owns, adds a value to it, then drops its reference to it (maybe the last one, so that
    /// device's release runs inside this value's drop).
    DrmValueReenters {
        dev: u8,
        other: u8,
    },
}

/// Number of operation kinds (the tag byte is taken modulo this).
pub const OP_KINDS: u8 = 38;

impl Op {
    /// Decodes one operation from a tag byte and two argument bytes.
    pub fn decode(tag: u8, a: u8, b: u8) -> Op {
        use Op::*;
        match tag % OP_KINDS {
            0 => NewDevice,
            1 => DrmAddAction {
                dev: a,
                adds: b & 1 == 1,
            },
            2 => DrmAddOrReset { dev: a },
            3 => DrmAlloc { dev: a },
            4 => DrmKzalloc { dev: a, len: b },
            5 => DrmBadAlloc { dev: a, which: b },
            6 => DrmFree { h: a },
            7 => DrmRemove { h: a },
            8 => DrmForeign { h: a, dev: b },
            9 => DrmRead { h: a },
            10 => CloneRef { dev: a },
            11 => DropRef { dev: a },
            12 => Register { dev: a },
            13 => Unplug { dev: a },
            14 => Enter { dev: a },
            15 => Open { dev: a },
            16 => Close { f: a },
            17 => FileUse { f: a },
            18 => Bind {
                bus: a,
                fail: b & 1 == 1,
            },
            19 => Unbind { bus: a },
            20 => RemoveBus { bus: a },
            21 => DevresAction { bus: a },
            22 => DevresAlloc { bus: a },
            23 => DevresKzalloc { bus: a, len: b },
            24 => DevresFree { h: a },
            25 => DevresRemove { h: a },
            26 => DevresRead { h: a },
            27 => DevresRealloc { h: a, len: b },
            28 => DevresNew { bus: a },
            29 => DevresDrop { r: a },
            30 => DevresAccess { r: a },
            31 => OpenGroup { bus: a },
            32 => CloseGroup { g: a },
            33 => ReleaseGroup { g: a },
            34 => RemoveGroup { g: a },
            35 => DrmReentrant { dev: a, h: b },
            36 => DevresNested { bus: a },
            _ => DrmValueReenters { dev: a, other: b },
        }
    }

    /// The three bytes that decode to this operation.
    pub fn encode(self) -> [u8; 3] {
        use Op::*;
        match self {
            NewDevice => [0, 0, 0],
            DrmAddAction { dev, adds } => [1, dev, adds as u8],
            DrmAddOrReset { dev } => [2, dev, 0],
            DrmAlloc { dev } => [3, dev, 0],
            DrmKzalloc { dev, len } => [4, dev, len],
            DrmBadAlloc { dev, which } => [5, dev, which],
            DrmFree { h } => [6, h, 0],
            DrmRemove { h } => [7, h, 0],
            DrmForeign { h, dev } => [8, h, dev],
            DrmRead { h } => [9, h, 0],
            CloneRef { dev } => [10, dev, 0],
            DropRef { dev } => [11, dev, 0],
            Register { dev } => [12, dev, 0],
            Unplug { dev } => [13, dev, 0],
            Enter { dev } => [14, dev, 0],
            Open { dev } => [15, dev, 0],
            Close { f } => [16, f, 0],
            FileUse { f } => [17, f, 0],
            Bind { bus, fail } => [18, bus, fail as u8],
            Unbind { bus } => [19, bus, 0],
            RemoveBus { bus } => [20, bus, 0],
            DevresAction { bus } => [21, bus, 0],
            DevresAlloc { bus } => [22, bus, 0],
            DevresKzalloc { bus, len } => [23, bus, len],
            DevresFree { h } => [24, h, 0],
            DevresRemove { h } => [25, h, 0],
            DevresRead { h } => [26, h, 0],
            DevresRealloc { h, len } => [27, h, len],
            DevresNew { bus } => [28, bus, 0],
            DevresDrop { r } => [29, r, 0],
            DevresAccess { r } => [30, r, 0],
            OpenGroup { bus } => [31, bus, 0],
            CloseGroup { g } => [32, g, 0],
            ReleaseGroup { g } => [33, g, 0],
            RemoveGroup { g } => [34, g, 0],
            DrmReentrant { dev, h } => [35, dev, h],
            DevresNested { bus } => [36, bus, 0],
            DrmValueReenters { dev, other } => [37, dev, other],
        }
    }
}

/// Decodes a byte string: 3 bytes per operation, a trailing partial operation ignored, at
/// most [`MAX_OPS`] operations.
pub fn decode(bytes: &[u8]) -> Vec<Op> {
    bytes
        .chunks_exact(3)
        .take(MAX_OPS)
        .map(|c| Op::decode(c[0], c[1], c[2]))
        .collect()
}

/// Encodes a program (the inverse of [`decode`]).
pub fn encode(ops: &[Op]) -> Vec<u8> {
    ops.iter().flat_map(|op| op.encode()).collect()
}

/// A few hand-written programs that reach the interesting paths (the seed corpus).
pub fn seed_programs() -> Vec<Vec<Op>> {
    use Op::*;
    vec![
        // Re-entrant actions: one releasing an older entry, one a newer value (which a full
        // release frees first: the action's early release answers `NotOnList`), one released
        // early; a Devres owning another, dropped by hand (one left for the unbind: see
        // `nested_devres_left_for_the_unbind`).
        vec![
            NewDevice,
            DrmAlloc { dev: 0 },
            DrmReentrant { dev: 0, h: 0 },
            DrmReentrant { dev: 0, h: 1 },
            DrmKzalloc { dev: 0, len: 2 },
            DrmReentrant { dev: 0, h: 2 },
            DrmFree { h: 2 },
            Bind {
                bus: 0,
                fail: false,
            },
            DevresNested { bus: 0 },
            DevresAccess { r: 0 },
            DevresDrop { r: 0 },
            DrmReentrant { dev: 1, h: 1 },
            Unbind { bus: 0 },
            DevresAccess { r: 0 },
            DropRef { dev: 0 },
        ],
        // A value whose drop re-enters an older device: it frees that device's value, adds
        // one, and drops the device's last reference (the device's release runs inside the
        // value's drop, itself inside the release of the value's own device).
        vec![
            NewDevice,
            NewDevice,
            DrmAlloc { dev: 0 },
            DrmValueReenters { dev: 1, other: 0 },
            DrmKzalloc { dev: 0, len: 1 },
            DrmValueReenters { dev: 1, other: 0 },
            DrmRead { h: 1 },
            DropRef { dev: 0 },
            DrmFree { h: 1 },
            DropRef { dev: 0 },
        ],
        // drmm basics, adds during release, early free, foreign handle.
        vec![
            NewDevice,
            NewDevice,
            DrmAddAction { dev: 0, adds: true },
            DrmAlloc { dev: 0 },
            DrmKzalloc { dev: 0, len: 7 },
            DrmRead { h: 1 },
            DrmFree { h: 1 },
            DrmForeign { h: 0, dev: 1 },
            DrmAddOrReset { dev: 1 },
            DrmRemove { h: 1 },
            DrmBadAlloc { dev: 0, which: 1 },
            DropRef { dev: 0 },
        ],
        // Bind, open a file, unplug by unbinding with the file open, last close releases.
        vec![
            Bind {
                bus: 0,
                fail: false,
            },
            DevresAlloc { bus: 0 },
            DevresNew { bus: 0 },
            CloneRef { dev: 0 },
            Open { dev: 0 },
            DrmAlloc { dev: 0 },
            DropRef { dev: 0 },
            Unbind { bus: 0 },
            DevresAccess { r: 0 },
            FileUse { f: 0 },
            Enter { dev: 0 },
            Close { f: 0 },
        ],
        // Groups, nested and overlapping, released and removed.
        vec![
            OpenGroup { bus: 1 },
            DevresAction { bus: 1 },
            OpenGroup { bus: 1 },
            DevresKzalloc { bus: 1, len: 9 },
            CloseGroup { g: 0 },
            DevresAlloc { bus: 1 },
            CloseGroup { g: 1 },
            ReleaseGroup { g: 0 },
            CloseGroup { g: 0 },
            RemoveGroup { g: 0 },
            DevresRead { h: 0 },
            RemoveBus { bus: 1 },
        ],
        // Failing probe over driver-less leftovers, then a bind inside an open group.
        vec![
            DevresAction { bus: 0 },
            Bind { bus: 0, fail: true },
            OpenGroup { bus: 0 },
            Bind {
                bus: 0,
                fail: false,
            },
            DevresKzalloc { bus: 0, len: 3 },
            DevresRealloc { h: 0, len: 40 },
            ReleaseGroup { g: 0 },
            Register { dev: 0 },
            Unplug { dev: 0 },
            Open { dev: 0 },
            Unbind { bus: 0 },
            Bind {
                bus: 0,
                fail: false,
            },
            RemoveBus { bus: 0 },
            Bind {
                bus: 0,
                fail: false,
            },
        ],
    ]
}
