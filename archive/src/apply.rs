//! The tar engine's apply side: extract an OCI layer tar into a layer root, confined.
//!
//! # Confinement
//! Every entry's parent directory is opened with `openat2(root, parent,
//! RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`, and the entry itself is made with an `*at`
//! call on that descriptor and never followed. So `..`, absolute names, and symlinks or
//! hardlinks placed by earlier entries (or by lower layers) cannot make a write, chmod,
//! link or delete land outside the root. Rules on top of that, the same for every
//! driver so that their merged views agree:
//! * a name with a `..` component is refused; a leading `/` is dropped (as GNU tar and
//!   containerd do);
//! * an entry may not be written *through* a symbolic link (`ELOOP` from the resolver):
//!   diff tools walk real trees, so only a crafted tar does this;
//! * a hardlink's target must be an entry this same tar made, as where the lower
//!   layers are not in the layer's directory (a union mount's upper);
//! * a 0/0 character device is refused: a union mount would read it as a whiteout
//!   while a driver that copies or snapshots kept a device, and the drivers would
//!   disagree about what exists;
//! * a layer may not set an xattr in a namespace a storage driver reserves for its own
//!   bookkeeping ([`ApplyOptions::reserved_xattrs`], data from the driver set: see
//!   `driver_core::reserved`), on any driver.
//!
//! # Whiteouts
//! `.wh.NAME` hides NAME of the *lower* layers and `.wh..wh..opq` all lower content of
//! its directory; what this tar extracts itself stays, in whatever order the tar lists
//! the whiteout (umoci tracks this the same way). How a whiteout is stored is the
//! driver's [`WhiteoutFormat`] (deleted in place unless the driver records them). Where
//! whiteouts are recorded, a directory that replaces a non-directory (a recorded
//! whiteout included) is made opaque, or the lower directory's content would show
//! through it (BuildKit shipped that bug: moby/buildkit#2614, #2710).
//!
//! # Metadata
//! Files get owner, then mode (chown clears setuid bits and `security.capability`),
//! then xattrs, then times. Directories get mode and times after the whole tar, so a
//! mode-0000 directory can still receive its children and its mtime is the tar's, not
//! the time its last child was written. A directory that existed before and that the
//! engine changed without the tar describing it (a whiteout deleted something in it)
//! gets its times back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

use driver_core::digest::Hashing;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use driver_core::error::{Cause, Error, Result};
use driver_core::lifecycle::{Applied, LayerInput};
use driver_core::sys::{self, errno, XattrTarget};
use driver_core::writeback::Flusher;
use driver_core::{Durability, ReservedXattrs};

use crate::whiteout::{DeleteInPlace, WhiteoutFormat, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// What the engine needs to know besides the tar and the root.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Layer ID, for error messages.
    pub layer: String,
    /// How the layer directory stores whiteouts ([`DeleteInPlace`] by default).
    pub whiteouts: Arc<dyn WhiteoutFormat>,
    /// The input is an uncompressed tar (decompressed where the blob was read): taken
    /// as it is, without looking for gzip or zstd and buffering it a second time.
    pub uncompressed: bool,
    /// Xattr namespaces the layer may not set (none by default): every driver's
    /// bookkeeping namespaces, so that all drivers refuse the same layers.
    pub reserved_xattrs: ReservedXattrs,
    /// How what is written is synced: under [`Durability::File`] each file as it is
    /// closed and each directory changed at the end (`chain` by default: the
    /// lifecycle's one `syncfs` per chain does it).
    pub durability: Durability,
}

impl ApplyOptions {
    /// Options for layer `layer`, whiteouts deleted in place.
    pub fn new(layer: impl Into<String>) -> Self {
        ApplyOptions {
            layer: layer.into(),
            whiteouts: Arc::new(DeleteInPlace),
            uncompressed: false,
            reserved_xattrs: ReservedXattrs::none(),
            durability: Durability::Chain,
        }
    }

    /// The options for a layer as the lifecycle hands it to a driver: its ID, whether
    /// the tar is known to be plain, the reserved namespaces, the store's `--sync` mode;
    /// whiteouts deleted in place.
    pub fn of(input: &LayerInput<'_>) -> Self {
        let mut opts = ApplyOptions::new(&input.staging.id).uncompressed(input.uncompressed).reserving(input.reserved);
        opts.durability = input.staging.durability;
        opts
    }

    /// The same options, with the input known to be uncompressed or not.
    pub fn uncompressed(mut self, uncompressed: bool) -> Self {
        self.uncompressed = uncompressed;
        self
    }

    /// The same options, refusing the xattr namespaces in `reserved`.
    pub fn reserving(mut self, reserved: &ReservedXattrs) -> Self {
        self.reserved_xattrs = reserved.clone();
        self
    }

    /// The same options with whiteouts stored in `format`.
    pub fn with_whiteouts(mut self, format: Arc<dyn WhiteoutFormat>) -> Self {
        self.whiteouts = format;
        self
    }
}

/// What an apply did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    /// Bytes of regular-file content written (what `layer apply` prints).
    pub size: u64,
    /// Uncompressed bytes of the tar stream.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diff_id.
    pub diff_id: String,
    /// Number of tar entries processed.
    pub entries: u64,
    /// Directories the tar did not describe but the engine had to create (parents of
    /// entries), relative to the root; `""` is the root itself when the tar did not
    /// describe it. A driver whose layer directory does not hold the lower layers
    /// (a union mount's upper) copies their metadata from the lower layers at commit time.
    pub implicit_dirs: Vec<PathBuf>,
    /// Bytes of the longest path the layer holds, relative to its root (a whiteout's
    /// is its directory's: it hides, it holds nothing there).
    pub longest_path: usize,
    /// sha256 of each regular file's content, hashed as it was written, by path: the
    /// layer's content record takes them from here (`driver_core::record`).
    pub content: driver_core::record::Written,
}

impl From<ApplyReport> for Applied {
    fn from(r: ApplyReport) -> Self {
        Applied {
            size: r.size,
            diff_id: r.diff_id,
            implicit_dirs: r.implicit_dirs,
            longest_path: r.longest_path,
            content: r.content,
        }
    }
}

/// [`LayerFs::apply`](driver_core::lifecycle::LayerFs::apply) for a driver whose layer
/// directory holds its parent's content (a copy, a snapshot): the tar applied to the
/// staging directory itself, whiteouts deleted in place.
pub fn apply_in_place(input: LayerInput<'_>) -> Result<Applied> {
    let opts = ApplyOptions::of(&input);
    Ok(apply_layer(&input.staging.path, input.tar, &opts)?.into())
}

/// Longest path the engine accepts (PATH_MAX less the terminating NUL).
const MAX_PATH: usize = 4095;
const MAX_NAME: usize = 255;

/// Largest apparent size of a sparse file. The tar reader hands a sparse file's holes
/// over as zeros, so applying one costs time in proportion to its apparent size (about
/// a second per 10 GiB here): without a bound, a header claiming exabytes would keep an
/// unpack busy forever. 64 GiB covers the classic case (a lastlog file sized for large
/// UIDs); the fuzz build uses a small bound so that the fuzzer is not slowed down.
#[cfg(not(fuzzing))]
pub const MAX_SPARSE_SIZE: u64 = 64 << 30;
#[cfg(fuzzing)]
pub const MAX_SPARSE_SIZE: u64 = 64 << 20;

/// Applies the layer tar read from `input` (plain, gzip or zstd; taken as plain when
/// `opts.uncompressed`) onto the tree at `root`. The report's diff_id is the digest of
/// the uncompressed stream, hashed here, as it is read.
pub fn apply_layer(root: &Path, input: impl Read, opts: &ApplyOptions) -> Result<ApplyReport> {
    let layer = opts.layer.as_str();
    let mut reader: Box<dyn Read + '_> = if opts.uncompressed {
        Box::new(input)
    } else {
        Box::new(
            crate::compress::decompress(input)
                .map_err(|e| Error::layer(layer, Cause::BadTar(format!("cannot read the stream: {e}"))))?
                .1,
        )
    };
    let root_fd = sys::open_dir(root).map_err(|e| Error::at(layer, root, e))?;
    // Early writeback is a head start only: without it the commit's syncfs writes all.
    // Only under `chain`: `none` syncs nothing, `file` each file itself.
    let flusher = Flusher::of(root).ok().filter(|_| opts.durability == Durability::Chain);
    let mut applier = Applier::new(opts, root_fd, flusher);
    // Three threads per layer: this one inflates, one hashes the tar (its diff_id), one
    // parses the tar and writes the files, so one big layer keeps two cores busy (issue
    // 17: a single layer used one; then the inflating thread, hashing too, was the one
    // the others waited for). The stream goes from one to the next in a few recycled
    // buffers: memory stays bounded whatever the layer's size.
    let (full_tx, to_hash) = sync_channel::<io::Result<(Vec<u8>, usize)>>(PIPE_BUFFERS);
    let (hashed, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(PIPE_BUFFERS);
    let (free_tx, free_rx) = channel::<Vec<u8>>();
    for _ in 0..PIPE_BUFFERS + 2 {
        let _ = free_tx.send(vec![0u8; PIPE_BUFFER]);
    }
    let (written, hash, pumped) = std::thread::scope(|scope| {
        let hasher = scope.spawn(move || hash_through(to_hash, hashed));
        let writer = scope.spawn(move || -> Result<ApplyReport> {
            let mut pipe = PipeReader { full: full_rx, free: free_tx, cur: None, pos: 0 };
            {
                let mut archive = tar::Archive::new(&mut pipe);
                let entries = archive.entries().map_err(|e| bad_stream(layer, e))?;
                for entry in entries {
                    let mut entry = entry.map_err(|e| bad_stream(layer, e))?;
                    applier.entry(&mut entry)?;
                }
            }
            // Read to the end so that the digest covers the whole stream (the tar's
            // trailing blocks) and a gzip/zstd trailer is checked.
            io::copy(&mut pipe, &mut io::sink()).map_err(|e| bad_stream(layer, e))?;
            applier.finish()?;
            Ok(applier.report)
        });
        let pumped = pump(&mut reader, full_tx, free_rx);
        (writer.join(), hasher.join(), pumped)
    });
    // A stream that cannot be read (truncated, corrupt, a digest that does not match)
    // is the cause of whatever the writer then saw; else the writer's error stands
    // (a refused entry stops the pump).
    pumped.map_err(|e| bad_stream(layer, e))?;
    let mut report = written.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    (report.diff_id, report.tar_bytes) = hash.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    Ok(report)
}

/// Hashes each buffer on its way from the pump to the writer: the digest and size of
/// the whole stream once the pump has ended it (or of what passed, when the writer
/// stopped first: then the writer's error is what counts).
fn hash_through(
    from: Receiver<io::Result<(Vec<u8>, usize)>>,
    to: SyncSender<io::Result<(Vec<u8>, usize)>>,
) -> (String, u64) {
    let mut hashing = Hashing::new(io::sink());
    for item in from {
        if let Ok((buf, len)) = &item {
            io::Write::write_all(&mut hashing, &buf[..*len]).expect("a sink takes every byte");
        }
        if to.send(item).is_err() {
            break;
        }
    }
    let (_, digest, bytes) = hashing.finish();
    (digest, bytes)
}

/// Buffers in flight between the inflating thread and the writing one, and their size.
const PIPE_BUFFERS: usize = 8;
const PIPE_BUFFER: usize = 256 << 10;

/// Reads `input` to its end into buffers from `free` and sends them, full, to the
/// writer. Stops early, with no error, when the writer has stopped (it reports why);
/// a read error is sent on to the writer and returned.
fn pump(
    input: &mut impl Read,
    full: SyncSender<io::Result<(Vec<u8>, usize)>>,
    free: Receiver<Vec<u8>>,
) -> io::Result<()> {
    loop {
        let Ok(mut buf) = free.recv() else { return Ok(()) };
        let mut len = 0;
        while len < buf.len() {
            match input.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = full.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            }
        }
        if len == 0 {
            return Ok(()); // the end: dropping `full` is the writer's end of stream
        }
        if full.send(Ok((buf, len))).is_err() {
            return Ok(());
        }
    }
}

/// The writer's side of the pipe: the stream as the pump sends it.
struct PipeReader {
    full: Receiver<io::Result<(Vec<u8>, usize)>>,
    free: Sender<Vec<u8>>,
    cur: Option<(Vec<u8>, usize)>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((buf, len)) = &self.cur {
                if self.pos < *len {
                    let n = out.len().min(len - self.pos);
                    out[..n].copy_from_slice(&buf[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if let Some((buf, _)) = self.cur.take() {
                let _ = self.free.send(buf);
            }
            match self.full.recv() {
                Ok(Ok(next)) => (self.cur, self.pos) = (Some(next), 0),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
    }
}

fn bad_stream(layer: &str, e: io::Error) -> Error {
    let what = match e.kind() {
        io::ErrorKind::UnexpectedEof => "the stream ends early (truncated)".to_string(),
        _ => e.to_string(),
    };
    Error::layer(layer, Cause::BadTar(what))
}

/// A normalised path inside the layer: components joined by `/`, `""` for the root.
type RelPath = Vec<u8>;

fn show(p: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(p))
}

/// Normalises an entry name: drops a leading `/`, `.` and empty components; refuses
/// `..`, names over 255 bytes and paths over 4095 bytes.
fn normalize(raw: &[u8]) -> std::result::Result<RelPath, Cause> {
    let mut out: RelPath = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => {
                return Err(Cause::Refused(
                    "the name has a '..' component: an entry may not climb out of its directory".into(),
                ))
            }
            c if c.len() > MAX_NAME => {
                return Err(Cause::BadTar(format!(
                    "a name component is {} bytes long (the limit is {MAX_NAME})",
                    c.len()
                )))
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.len() > MAX_PATH {
        return Err(Cause::BadTar(format!("the path is {} bytes long (the limit is {MAX_PATH})", out.len())));
    }
    Ok(out)
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn join(parent: &[u8], name: &[u8]) -> RelPath {
    let mut p = Vec::with_capacity(parent.len() + name.len() + 1);
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Owner, mode, times and xattrs of an entry.
type Meta = sys::NodeMeta;

/// Parses a PAX time (`1700000000.123456789`, possibly negative).
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += c.to_digit(10)? as i64 * 10i64.pow(8 - i as u32);
    }
    let total = if neg { -(secs * 1_000_000_000 + nanos) } else { secs * 1_000_000_000 + nanos };
    Some(TimeSpec::new(total.div_euclid(1_000_000_000), total.rem_euclid(1_000_000_000)))
}

/// Reads owner, mode, times and xattrs from the header and its PAX records.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, reserved: &ReservedXattrs) -> std::result::Result<Meta, Cause> {
    let header = entry.header();
    let bad = |what: &str, e: io::Error| Cause::BadTar(format!("bad {what} in header: {e}"));
    let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
    let uid = header.uid().map_err(|e| bad("uid", e))?;
    let gid = header.gid().map_err(|e| bad("gid", e))?;
    let mtime = header.mtime().map_err(|e| bad("mtime", e))?;
    let mut meta = Meta {
        mode,
        uid: u32::try_from(uid).map_err(|_| Cause::BadTar(format!("uid {uid} does not fit in 32 bits")))?,
        gid: u32::try_from(gid).map_err(|_| Cause::BadTar(format!("gid {gid} does not fit in 32 bits")))?,
        atime: TimeSpec::new(0, 0),
        mtime: TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0),
        xattrs: Vec::new(),
    };
    let mut atime = None;
    if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX records", e))? {
        for ext in pax {
            let ext = ext.map_err(|e| bad("PAX record", e))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let num = |v: &[u8]| -> std::result::Result<u32, Cause> {
                std::str::from_utf8(v).ok().and_then(|s| s.parse::<u32>().ok()).ok_or_else(|| {
                    Cause::BadTar(format!("PAX {} is not a 32-bit number", String::from_utf8_lossy(key)))
                })
            };
            match key {
                b"uid" => meta.uid = num(value)?,
                b"gid" => meta.gid = num(value)?,
                b"mtime" => {
                    meta.mtime = parse_pax_time(value).ok_or_else(|| Cause::BadTar("PAX mtime is not a time".into()))?
                }
                b"atime" => atime = parse_pax_time(value),
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let name = String::from_utf8_lossy(&k[b"SCHILY.xattr.".len()..]).into_owned();
                    meta.xattrs.push((name, value.to_vec()));
                }
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(Cause::Unsupported(
                        "PAX-format sparse files (GNU.sparse.* records); the old GNU sparse format is supported".into(),
                    ))
                }
                _ => {}
            }
        }
    }
    meta.atime = atime.unwrap_or(meta.mtime);
    for (name, _) in &meta.xattrs {
        if let Some(ns) = reserved.matching(name) {
            return Err(Cause::Refused(format!(
                "the layer sets the xattr {name}; {ns}* is a storage driver's own namespace, which only it may set"
            )));
        }
    }
    meta.xattrs.sort();
    meta.xattrs.dedup_by(|a, b| a.0 == b.0);
    Ok(meta)
}

/// Directory metadata applied once the whole tar is in.
#[derive(Clone, Debug)]
struct DirMeta {
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
}

struct Applier<'a> {
    opts: &'a ApplyOptions,
    root: OwnedFd,
    /// Paths this tar has made itself.
    extracted: HashSet<RelPath>,
    /// Paths that have something this tar made below them.
    ancestors: HashSet<RelPath>,
    /// Directories made during this apply (by an entry or implicitly).
    created_dirs: HashSet<RelPath>,
    /// Mode and times to give directories at the end, by path.
    dir_meta: BTreeMap<RelPath, DirMeta>,
    /// Directories that existed before and that the engine changed: their times.
    touched: HashMap<RelPath, (TimeSpec, TimeSpec)>,
    /// Directories an entry of the tar described (the root as `""`).
    described: HashSet<RelPath>,
    buf: Vec<u8>,
    report: ApplyReport,
    /// Starts the disk on the data written so far (see [`driver_core::writeback`]).
    flusher: Option<Arc<Flusher>>,
    /// The directory the last file, symlink or device was made in, kept open.
    last_dir: Option<LastDir>,
}

/// A directory kept open for the next entry: a tar lists a directory's files together,
/// so most files are made where the one before was, without resolving their parent
/// again. Only files, symlinks and devices reuse it: they change only a name inside
/// it, while a directory, link or whiteout entry (which may replace or remove a
/// directory) drops it, and so does an entry in another directory.
struct LastDir {
    path: RelPath,
    fd: OwnedFd,
    creator: sys::Creator,
}

impl<'a> Applier<'a> {
    fn new(opts: &'a ApplyOptions, root: OwnedFd, flusher: Option<Arc<Flusher>>) -> Self {
        Applier {
            opts,
            root,
            extracted: HashSet::new(),
            ancestors: HashSet::new(),
            created_dirs: HashSet::new(),
            dir_meta: BTreeMap::new(),
            touched: HashMap::new(),
            described: HashSet::new(),
            buf: vec![0u8; 1 << 20],
            report: ApplyReport::default(),
            flusher,
            last_dir: None,
        }
    }

    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    fn err(&self, path: &[u8], cause: impl Into<Cause>) -> Error {
        Error::at(&self.opts.layer, show(path), cause)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        self.report.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            return Ok(());
        }
        let path = normalize(&raw).map_err(|c| self.err(&raw, c))?;
        let (parent, name) = split(&path);
        let held = if name.starts_with(WHITEOUT_PREFIX.as_bytes()) { parent.len() } else { path.len() };
        self.report.longest_path = self.report.longest_path.max(held);
        let meta = read_meta(entry, &self.opts.reserved_xattrs).map_err(|c| self.err(&path, c))?;
        self.entry_at(&path, kind, meta, entry).map_err(|e| e.in_layer(&self.opts.layer).with_path(show(&path)))
    }

    fn entry_at<R: Read>(
        &mut self,
        path: &[u8],
        kind: tar::EntryType,
        meta: Meta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        if path.is_empty() {
            return self.root_entry(kind, meta);
        }
        let (parent, name) = split(path);
        let makes_a_file = matches!(
            kind,
            tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse
                | tar::EntryType::Symlink
                | tar::EntryType::Char
                | tar::EntryType::Block
                | tar::EntryType::Fifo
        );
        if !makes_a_file || name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            self.last_dir = None;
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if name == OPAQUE_MARKER.as_bytes() {
                return self.opaque(parent, meta.mtime);
            }
            if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other `.wh..wh.` names are aufs bookkeeping (`.wh..wh.plnk`, ...);
                // moby and containerd skip them too.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(Cause::BadTar("a whiteout with no name to hide".into()).into());
            }
            return self.whiteout(parent, target, meta.mtime);
        }
        let name = OsStr::from_bytes(name);
        match kind {
            tar::EntryType::Directory => self.directory(path, parent, name, meta),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular(path, parent, name, meta, entry, kind == tar::EntryType::GNUSparse)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::new(Cause::BadTar("a symlink without a target".into())))?
                    .into_owned();
                self.symlink(path, parent, name, meta, &target)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::new(Cause::BadTar("a hardlink without a target".into())))?
                    .into_owned();
                self.hardlink(path, parent, name, &target)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if kind == tar::EntryType::Char && major == 0 && minor == 0 {
                    return Err(Cause::Refused(
                        "a 0/0 character device is a union-mount whiteout, not layer content; \
                         OCI layers delete with .wh. entries"
                            .into(),
                    )
                    .into());
                }
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.node(path, parent, name, meta, sflag, nix::sys::stat::makedev(major.into(), minor.into()))
            }
            other => Err(Cause::Unsupported(format!("tar entry type {other:?}")).into()),
        }
    }

    fn mark_extracted(&mut self, path: &[u8]) {
        self.extracted.insert(path.to_vec());
        let mut p = path;
        while !p.is_empty() {
            p = split(p).0;
            if !self.ancestors.insert(p.to_vec()) {
                break;
            }
        }
    }

    /// Remembers the times of a directory that existed before this apply, before the
    /// engine first changes something in it.
    fn touch(&mut self, dir: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
        if self.created_dirs.contains(dir) || self.touched.contains_key(dir) {
            return Ok(());
        }
        let st = sys::fstat(fd)?;
        self.touched.insert(
            dir.to_vec(),
            (TimeSpec::new(st.st_atime, st.st_atime_nsec), TimeSpec::new(st.st_mtime, st.st_mtime_nsec)),
        );
        Ok(())
    }

    /// Opens directory `dir`, creating missing components as implicit directories
    /// (0755, root, with the mtime of the entry that needed them).
    fn dir(&mut self, dir: &[u8], mtime: TimeSpec) -> Result<OwnedFd> {
        match sys::open_dir_in(self.root(), &show(dir)) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.resolve_error(dir, e)),
        }
        let mut cur = sys::open_dir_in(self.root(), Path::new(""))?;
        let mut prefix: RelPath = Vec::new();
        for comp in dir.split(|&b| b == b'/') {
            let parent = prefix.clone();
            prefix = join(&parent, comp);
            let name = OsStr::from_bytes(comp);
            match sys::open_at(cur.as_fd(), name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0) {
                Ok(fd) => cur = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    self.touch(&parent, cur.as_fd())?;
                    nix::sys::stat::mkdirat(Some(cur.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| self.err(&prefix, e))?;
                    let fd = sys::open_at(cur.as_fd(), name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
                    self.created_dirs.insert(prefix.clone());
                    self.dir_meta.insert(prefix.clone(), DirMeta { mode: 0o755, atime: mtime, mtime });
                    self.report.implicit_dirs.push(show(&prefix));
                    cur = fd;
                }
                Err(e) => return Err(self.resolve_error(&prefix, e)),
            }
        }
        Ok(cur)
    }

    fn resolve_error(&self, dir: &[u8], e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ELOOP) => self.through_link(dir),
            // A final symlink opened with O_DIRECTORY | O_NOFOLLOW gives ENOTDIR, not
            // ELOOP: find out which it was.
            Some(libc::ENOTDIR) => match self.first_non_dir(dir) {
                Some((prefix, true)) => self.through_link(&prefix),
                Some((prefix, false)) => {
                    self.err(&prefix, Cause::BadTar("a parent of the entry is not a directory".into()))
                }
                None => self.err(dir, e),
            },
            Some(libc::EXDEV) => self.err(dir, Cause::Refused("the path leaves the layer root".into())),
            _ => self.err(dir, e),
        }
    }

    fn through_link(&self, dir: &[u8]) -> Error {
        self.err(
            dir,
            Cause::Refused("the path goes through a symbolic link; a layer may not write through a link".into()),
        )
    }

    /// The first component of `dir` that is not a directory, and whether it is a link.
    fn first_non_dir(&self, dir: &[u8]) -> Option<(RelPath, bool)> {
        let mut prefix: RelPath = Vec::new();
        for comp in dir.split(|&b| b == b'/') {
            prefix = join(&prefix, comp);
            let fd = sys::open_in(self.root(), &show(&prefix), OFlag::O_PATH).ok()?;
            let st = sys::fstat(fd.as_fd()).ok()?;
            match sys::file_type(&st) {
                SFlag::S_IFDIR => continue,
                SFlag::S_IFLNK => return Some((prefix, true)),
                _ => return Some((prefix, false)),
            }
        }
        None
    }

    /// Clears the slot `name` in `parent` for a new non-directory entry.
    fn clear_slot(&mut self, parent: &[u8], pfd: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
        self.touch(parent, pfd)?;
        sys::remove_all_at(pfd, name)?;
        Ok(())
    }

    /// The directory `parent` for a new file, symlink or device: the last one when it
    /// is the same ([`LastDir`]), else opened (made) as [`Applier::dir`] does. Put it
    /// back in `last_dir` once the entry is made.
    fn take_dir(&mut self, parent: &[u8], mtime: TimeSpec) -> Result<LastDir> {
        if let Some(d) = self.last_dir.take().filter(|d| d.path == parent) {
            return Ok(d);
        }
        let fd = self.dir(parent, mtime)?;
        let creator = sys::Creator::in_dir(fd.as_fd())?;
        self.touch(parent, fd.as_fd())?;
        Ok(LastDir { path: parent.to_vec(), fd, creator })
    }

    /// Makes `name` in `d` with `make`; when the slot is taken (EEXIST), empties it first,
    /// as a later entry of a tar replaces an earlier one. Trying first saves an unlink
    /// per entry, nearly all of which find the slot free.
    fn make_in<T>(d: &LastDir, name: &OsStr, make: impl Fn() -> io::Result<T>) -> Result<T> {
        match make() {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                sys::remove_all_at(d.fd.as_fd(), name)?;
                Ok(make()?)
            }
            made => Ok(made?),
        }
    }

    fn root_entry(&mut self, kind: tar::EntryType, meta: Meta) -> Result<()> {
        if kind != tar::EntryType::Directory {
            return Err(Cause::BadTar("the entry for the layer root is not a directory".into()).into());
        }
        let fd = sys::open_dir_in(self.root(), Path::new(""))?;
        nix::unistd::fchown(fd.as_raw_fd(), Some(meta.uid.into()), Some(meta.gid.into()))?;
        sys::set_xattrs(XattrTarget::Fd(fd.as_raw_fd()), &meta.xattrs)?;
        self.dir_meta.insert(Vec::new(), DirMeta { mode: meta.mode, atime: meta.atime, mtime: meta.mtime });
        self.described.insert(Vec::new());
        Ok(())
    }

    fn directory(&mut self, path: &[u8], parent: &[u8], name: &OsStr, meta: Meta) -> Result<()> {
        let pfd = self.dir(parent, meta.mtime)?;
        let mut opaque = false;
        match sys::lstat_at(pfd.as_fd(), name)? {
            Some(st) if sys::is_dir(&st) => {}
            existing => {
                self.touch(parent, pfd.as_fd())?;
                if existing.is_some() {
                    sys::remove_all_at(pfd.as_fd(), name)?;
                    // A directory over a non-directory in a recorded layer would
                    // otherwise merge with the lower directory below it.
                    opaque = self.opts.whiteouts.records();
                }
                nix::sys::stat::mkdirat(Some(pfd.as_raw_fd()), name, Mode::from_bits_truncate(0o700))?;
                self.created_dirs.insert(path.to_vec());
            }
        }
        let fd = sys::open_at(pfd.as_fd(), name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
        nix::unistd::fchown(fd.as_raw_fd(), Some(meta.uid.into()), Some(meta.gid.into()))?;
        let target = XattrTarget::Fd(fd.as_raw_fd());
        // The entry describes the directory whole: xattrs it does not list go (except
        // the whiteout format's own markers), so every driver shows the same set.
        for old in sys::list_xattrs(target)? {
            let keep = meta.xattrs.iter().any(|(n, _)| *n == old) || self.opts.whiteouts.is_own_xattr(&old);
            if !keep {
                sys::remove_xattr(target, &old)?;
            }
        }
        sys::set_xattrs(target, &meta.xattrs)?;
        if opaque {
            self.set_opaque(fd.as_fd())?;
        }
        self.dir_meta.insert(path.to_vec(), DirMeta { mode: meta.mode, atime: meta.atime, mtime: meta.mtime });
        self.described.insert(path.to_vec());
        self.mark_extracted(path);
        Ok(())
    }

    fn set_opaque(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let format = &self.opts.whiteouts;
        if format.records() {
            format.write_opaque(fd).map_err(|e| {
                Error::new(Cause::Other(format!("cannot mark the directory opaque ({}): {e}", format.name())))
            })?;
        }
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        path: &[u8],
        parent: &[u8],
        name: &OsStr,
        meta: Meta,
        entry: &mut tar::Entry<'_, R>,
        sparse: bool,
    ) -> Result<()> {
        let d = self.take_dir(parent, meta.mtime)?;
        // Made with its own permission bits, so that the chmod is needed only where
        // the umask took some away (or for setuid, setgid, sticky).
        let mode = meta.mode & 0o777;
        let fd = Self::make_in(&d, name, || {
            sys::open_at(d.fd.as_fd(), name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY, mode)
        })?;
        let file = std::fs::File::from(fd);
        let size = entry.size();
        let digest = self.write_data(&file, entry, size, sparse)?;
        self.report.content.insert(path.to_vec(), digest);
        sys::set_metadata(sys::Node::Open(file.as_fd()), &meta, d.creator.made(mode))?;
        self.opts.durability.sync_written(&file)?;
        self.last_dir = Some(d);
        self.report.size += size;
        self.mark_extracted(path);
        Ok(())
    }

    /// Copies the entry's data and returns its sha256 (hashed here, where it passes,
    /// for the content record). A sparse entry's holes (and any all-zero block of it)
    /// are skipped rather than written, so the file keeps its holes on disk.
    fn write_data<R: Read>(
        &mut self,
        file: &std::fs::File,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
        sparse: bool,
    ) -> Result<[u8; 32]> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        if sparse && size > MAX_SPARSE_SIZE {
            return Err(Cause::BadTar(format!(
                "a sparse file of {size} bytes (strata applies sparse files of up to {MAX_SPARSE_SIZE} bytes)"
            ))
            .into());
        }
        let mut off = 0u64;
        let mut buf = std::mem::take(&mut self.buf);
        let result = (|| -> Result<()> {
            loop {
                let n = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(bad_stream(&self.opts.layer, e)),
                };
                hasher.update(&buf[..n]);
                if sparse {
                    for (i, block) in buf[..n].chunks(4096).enumerate() {
                        if block.iter().any(|&b| b != 0) {
                            file.write_all_at(block, off + (i * 4096) as u64)?;
                        }
                    }
                } else {
                    file.write_all_at(&buf[..n], off)?;
                }
                if let Some(f) = &self.flusher {
                    f.wrote(n as u64);
                }
                off += n as u64;
            }
            if off != size {
                return Err(bad_stream(&self.opts.layer, io::ErrorKind::UnexpectedEof.into()));
            }
            if sparse {
                file.set_len(size)?;
            }
            Ok(())
        })();
        self.buf = buf;
        result.map(|()| hasher.finalize().into())
    }

    fn symlink(&mut self, path: &[u8], parent: &[u8], name: &OsStr, meta: Meta, target: &[u8]) -> Result<()> {
        if target.is_empty() || target.len() > MAX_PATH {
            return Err(Cause::BadTar(format!("symlink target of {} bytes", target.len())).into());
        }
        let d = self.take_dir(parent, meta.mtime)?;
        Self::make_in(&d, name, || {
            nix::unistd::symlinkat(OsStr::from_bytes(target), Some(d.fd.as_raw_fd()), name).map_err(errno)
        })?;
        let node = sys::Node::Named { dir: d.fd.as_fd(), name, symlink: true };
        sys::set_metadata(node, &meta, d.creator.made(0o777))?;
        self.last_dir = Some(d);
        self.mark_extracted(path);
        Ok(())
    }

    fn hardlink(&mut self, path: &[u8], parent: &[u8], name: &OsStr, raw_target: &[u8]) -> Result<()> {
        let target = normalize(raw_target)?;
        if !self.extracted.contains(&target) {
            return Err(Cause::Refused(format!(
                "hardlink target {} is not an entry of this layer",
                show(&target).display()
            ))
            .into());
        }
        if target == path {
            return Ok(());
        }
        let (tparent, tname) = split(&target);
        let tfd = sys::open_dir_in(self.root(), &show(tparent)).map_err(|e| self.resolve_error(tparent, e))?;
        let pfd = self.dir(parent, TimeSpec::new(0, 0))?;
        self.clear_slot(parent, pfd.as_fd(), name)?;
        nix::unistd::linkat(
            Some(tfd.as_raw_fd()),
            OsStr::from_bytes(tname),
            Some(pfd.as_raw_fd()),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| Error::new(Cause::Other(format!("cannot link to {}: {}", show(&target).display(), errno(e)))))?;
        self.mark_extracted(path);
        Ok(())
    }

    fn node(
        &mut self,
        path: &[u8],
        parent: &[u8],
        name: &OsStr,
        meta: Meta,
        kind: SFlag,
        dev: libc::dev_t,
    ) -> Result<()> {
        let d = self.take_dir(parent, meta.mtime)?;
        let mode = meta.mode & 0o777;
        Self::make_in(&d, name, || {
            nix::sys::stat::mknodat(Some(d.fd.as_raw_fd()), name, kind, Mode::from_bits_truncate(mode), dev)
                .map_err(errno)
        })?;
        let node = sys::Node::Named { dir: d.fd.as_fd(), name, symlink: false };
        sys::set_metadata(node, &meta, d.creator.made(mode))?;
        self.last_dir = Some(d);
        self.mark_extracted(path);
        Ok(())
    }

    /// `.wh.NAME` in `parent`: hide NAME of the lower layers.
    fn whiteout(&mut self, parent: &[u8], name: &[u8], mtime: TimeSpec) -> Result<()> {
        let target = join(parent, name);
        if self.extracted.contains(&target) || self.ancestors.contains(&target) {
            // This tar made the path (or things inside it): only what lies below it in
            // the lower layers is hidden, which for a directory means it is opaque.
            if let Ok(fd) = sys::open_dir_in(self.root(), &show(&target)) {
                return self.make_opaque(&target, fd);
            }
            return Ok(());
        }
        let name = OsStr::from_bytes(name);
        if self.opts.whiteouts.records() {
            let pfd = self.dir(parent, mtime)?;
            if sys::lstat_at(pfd.as_fd(), name)?.is_none() {
                self.touch(parent, pfd.as_fd())?;
                self.opts.whiteouts.write_whiteout(pfd.as_fd(), name)?;
            }
            return Ok(());
        }
        let pfd = match sys::open_dir_in(self.root(), &show(parent)) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // Through a link, or under a file: refused, as where whiteouts are recorded.
            Err(e) => return Err(self.resolve_error(parent, e)),
        };
        if sys::lstat_at(pfd.as_fd(), name)?.is_some() {
            self.touch(parent, pfd.as_fd())?;
            sys::remove_all_at(pfd.as_fd(), name)?;
        }
        Ok(())
    }

    /// `.wh..wh..opq` in `dir`: hide all lower content of `dir`.
    fn opaque(&mut self, dir: &[u8], mtime: TimeSpec) -> Result<()> {
        let fd = self.dir(dir, mtime)?;
        self.make_opaque(dir, fd)
    }

    fn make_opaque(&mut self, dir: &[u8], fd: OwnedFd) -> Result<()> {
        if self.opts.whiteouts.records() {
            self.set_opaque(fd.as_fd())
        } else {
            self.prune(dir, fd)
        }
    }

    /// Deletes everything under `dir` that this tar did not make.
    fn prune(&mut self, dir: &[u8], fd: OwnedFd) -> Result<()> {
        let mut names = sys::read_dir_names(fd.as_fd())?;
        names.sort();
        for name in names {
            let child = join(dir, name.as_bytes());
            if self.extracted.contains(&child) || self.ancestors.contains(&child) {
                if let Ok(sub) = sys::open_at(fd.as_fd(), &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0) {
                    self.prune(&child, sub)?;
                }
            } else {
                self.touch(dir, fd.as_fd())?;
                sys::remove_all_at(fd.as_fd(), &name)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        // A directory made implicitly and described by a later entry is not implicit.
        let described = &self.described;
        self.report.implicit_dirs.retain(|p| !described.contains(p.as_os_str().as_bytes()));
        if !self.described.contains(&Vec::new()) {
            self.report.implicit_dirs.insert(0, PathBuf::new());
        }
        let layer = self.opts.layer.clone();
        // Deepest first, though utimensat on a child leaves its parent's times alone.
        for (path, meta) in self.dir_meta.iter().rev() {
            let fd = match sys::open_dir_in(self.root(), &show(path)) {
                Ok(fd) => fd,
                // Replaced by a later entry.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                    continue
                }
                Err(e) => return Err(Error::at(&layer, show(path), e)),
            };
            nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(meta.mode))
                .map_err(|e| Error::at(&layer, show(path), e))?;
            nix::sys::stat::futimens(fd.as_raw_fd(), &meta.atime, &meta.mtime)
                .map_err(|e| Error::at(&layer, show(path), e))?;
        }
        for (path, (atime, mtime)) in &self.touched {
            if self.dir_meta.contains_key(path) {
                continue;
            }
            if let Ok(fd) = sys::open_dir_in(self.root(), &show(path)) {
                nix::sys::stat::futimens(fd.as_raw_fd(), atime, mtime).map_err(|e| Error::at(&layer, show(path), e))?;
            }
        }
        if self.opts.durability == Durability::File {
            self.sync_dirs()?;
        }
        Ok(())
    }

    /// Under `--sync file`: fsyncs every directory whose entries or metadata this apply
    /// changed (made, given metadata, or holding a node it made or removed), deepest
    /// first; each file was synced as it was closed.
    fn sync_dirs(&self) -> Result<()> {
        let mut dirs: BTreeSet<&[u8]> = self.dir_meta.keys().map(Vec::as_slice).collect();
        dirs.extend(self.touched.keys().map(Vec::as_slice));
        dirs.extend(self.extracted.iter().map(|p| split(p).0));
        dirs.insert(&[][..]);
        for path in dirs.iter().rev() {
            let fd = match sys::open_dir_in(self.root(), &show(path)) {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                    continue
                }
                Err(e) => return Err(Error::at(&self.opts.layer, show(path), e)),
            };
            // Through sys::fsync, so that the bench counts these like the files' own.
            sys::fsync(&std::fs::File::from(fd)).map_err(|e| Error::at(&self.opts.layer, show(path), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize(b"/a//b/./c/").unwrap(), b"a/b/c".to_vec());
        assert_eq!(normalize(b"./").unwrap(), b"".to_vec());
        assert!(normalize(b"a/../../etc").is_err());
        assert!(normalize(&[b'x'; 256]).is_err());
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some(TimeSpec::new(1700000000, 500_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(parse_pax_time(b"-1.5"), Some(TimeSpec::new(-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    /// Reads `data`, counting what was read; fails with `fail` once `fail_at` bytes
    /// are read, if given.
    struct Source<'a> {
        data: &'a [u8],
        read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        fail_at: Option<usize>,
    }

    impl Read for Source<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let at = self.read.load(std::sync::atomic::Ordering::Relaxed);
            if self.fail_at.is_some_and(|f| at >= f) {
                return Err(io::Error::other("the disk under the blob failed"));
            }
            let n = buf.len().min(self.data.len() - at);
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }
    }

    /// A tar of many files, far more bytes than the pipe between the inflating thread
    /// and the writing one holds.
    fn big_tar(first: Option<&[u8]>) -> Vec<u8> {
        let mut t = crate::tarbuild::TarBuilder::new();
        if let Some(name) = first {
            t.raw_file(name, b"x", crate::tarbuild::EntryMeta::default());
        }
        for i in 0..80 {
            t.file(&format!("f{i}"), &vec![i as u8; 256 << 10]);
        }
        t.build()
    }

    #[test]
    fn a_refused_entry_stops_the_reading_too() {
        let tar = big_tar(Some(b"../escape"));
        let tmp = tempfile::tempdir().unwrap();
        let read = std::sync::Arc::default();
        let src = Source { data: &tar, read: std::sync::Arc::clone(&read), fail_at: None };
        let err = apply_layer(tmp.path(), src, &ApplyOptions::new("l").uncompressed(true)).unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");
        // The pump stops when the writer does: at most the buffers in flight are read.
        let read = read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(read <= (PIPE_BUFFERS + 3) * PIPE_BUFFER, "read {read} of {} bytes", tar.len());
        assert!(!tmp.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn a_stream_that_fails_is_the_error_reported() {
        let tar = big_tar(None);
        for fail_at in [0, 1000, 5 << 20, tar.len() - 512] {
            let tmp = tempfile::tempdir().unwrap();
            let src = Source { data: &tar, read: std::sync::Arc::default(), fail_at: Some(fail_at) };
            let err = apply_layer(tmp.path(), src, &ApplyOptions::new("l").uncompressed(true)).unwrap_err();
            assert!(err.to_string().contains("the disk under the blob failed"), "at {fail_at}: {err}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = Source { data: &tar, read: std::sync::Arc::default(), fail_at: None };
        let report = apply_layer(tmp.path(), src, &ApplyOptions::new("l").uncompressed(true)).unwrap();
        assert_eq!((report.tar_bytes, report.size), (tar.len() as u64, 80 * (256 << 10)));
        assert_eq!(std::fs::read(tmp.path().join("f79")).unwrap(), vec![79u8; 256 << 10]);
    }
}
