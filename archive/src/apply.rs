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

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

use driver_core::digest::Hashing;

use driver_core::error::{io_context, os_error, Cause, Error, Result};
use driver_core::lifecycle::{Applied, LayerInput};
use driver_core::sys;
use driver_core::writeback::Flusher;
use driver_core::{Durability, ReservedXattrs};

use crate::whiteout::{DeleteInPlace, WhiteoutFormat};

mod applier;
mod finish;
mod header;
mod hide;
mod names;
mod recording;

use applier::Applier;

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
    /// The layer's tree, node by node as the apply made it, when the apply saw all of
    /// it (its root was empty before): the content record without a walk
    /// (`driver_core::record::Tree`). `None` where the root held a parent's copy.
    pub tree: Option<driver_core::record::Tree>,
}

impl From<ApplyReport> for Applied {
    fn from(r: ApplyReport) -> Self {
        Applied {
            size: r.size,
            diff_id: r.diff_id,
            implicit_dirs: r.implicit_dirs,
            longest_path: r.longest_path,
            content: r.content,
            tree: r.tree,
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
                .map_err(|e| match os_error(&e) {
                    Some(_) => unreadable(layer, e),
                    None => Error::layer(layer, Cause::BadTar(format!("cannot read the stream: {e}"))),
                })?
                .1,
        )
    };
    let root_fd = sys::open_dir(root).map_err(|e| Error::at(layer, root, e))?;
    // Early writeback is a head start only: without it the commit's syncfs writes all.
    // Only under `chain`: `none` syncs nothing, `file` each file itself.
    let flusher = Flusher::of(root).ok().filter(|_| opts.durability == Durability::Chain);
    // The record is made as the nodes are only where the apply makes the whole tree.
    let whole = sys::read_dir_names(root_fd.as_fd()).map_err(|e| Error::at(layer, root, e))?.is_empty();
    let mut applier = Applier::new(opts, root_fd, flusher);
    if whole {
        applier.report.tree = Some(Default::default());
    }
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
                    // The writer stops on this copy; what is reported is `e` itself,
                    // returned here (and looked at before the writer's error).
                    let copy = os_error(&e).map_or_else(|| io::Error::from(e.kind()), io::Error::from_raw_os_error);
                    let _ = full.send(Err(copy));
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

/// The layer's stream could not be read. An error with an errno (the disk under the
/// blob, a content store that tees the blob and is full: EIO, ENOSPC) is the io error it
/// is, kept whole so that its errno is found; one without (a decompressor's or the tar
/// reader's InvalidData, a stream that ends early, a digest check's words) is an
/// invalid layer tar, in its words: there is no errno or io source under it to keep.
fn bad_stream(layer: &str, e: io::Error) -> Error {
    if os_error(&e).is_some() {
        return unreadable(layer, e);
    }
    let what = match e.kind() {
        io::ErrorKind::UnexpectedEof => "the stream ends early (truncated)".to_string(),
        _ => e.to_string(),
    };
    Error::layer(layer, Cause::BadTar(what))
}

/// The io error that stopped the reading of layer `layer`'s stream, kept.
fn unreadable(layer: &str, e: io::Error) -> Error {
    Error::layer(layer, Cause::Io(io_context("cannot read the layer's stream", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `data`, counting what was read; fails with `fail` once `fail_at` bytes
    /// are read, if given.
    struct Source<'a> {
        data: &'a [u8],
        read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        fail_at: Option<usize>,
        /// The errno it fails with (none: words only).
        errno: Option<i32>,
    }

    impl Read for Source<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let at = self.read.load(std::sync::atomic::Ordering::Relaxed);
            if self.fail_at.is_some_and(|f| at >= f) {
                return Err(match self.errno {
                    Some(n) => io::Error::from_raw_os_error(n),
                    None => io::Error::other("the disk under the blob failed"),
                });
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
        let src = Source { data: &tar, read: std::sync::Arc::clone(&read), fail_at: None, errno: None };
        let err = apply_layer(tmp.path(), src, &ApplyOptions::new("l").uncompressed(true)).unwrap_err();
        assert!(matches!(&err.cause, Cause::Refused(why) if why.contains("'..'")), "{err}");
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
            let src = Source { data: &tar, read: std::sync::Arc::default(), fail_at: Some(fail_at), errno: None };
            let err = apply_layer(tmp.path(), src, &ApplyOptions::new("l").uncompressed(true)).unwrap_err();
            // No errno to keep: the stream's own words, as a tar that cannot be read.
            let said = |why: &str| why.contains("the disk under the blob failed");
            assert!(matches!(&err.cause, Cause::BadTar(why) if said(why)), "at {fail_at}: {err}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = Source { data: &tar, read: std::sync::Arc::default(), fail_at: None, errno: None };
        let report = apply_layer(tmp.path(), src, &ApplyOptions::new("l").uncompressed(true)).unwrap();
        assert_eq!((report.tar_bytes, report.size), (tar.len() as u64, 80 * (256 << 10)));
        assert_eq!(std::fs::read(tmp.path().join("f79")).unwrap(), vec![79u8; 256 << 10]);
    }

    /// A stream that fails with an errno (the disk under the blob: EIO; a content store
    /// teeing it that is full: ENOSPC) keeps it, wherever it fails: in the first bytes
    /// (where the compression is detected) or later, plain, gzip or zstd.
    #[test]
    fn a_stream_that_fails_with_an_errno_keeps_it() {
        let tar = big_tar(None);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for errno in [libc::ENOSPC, libc::EIO] {
            for (kind, data, uncompressed) in
                [("tar", &tar, true), ("tar", &tar, false), ("gzip", &gz, false), ("zstd", &zst, false)]
            {
                for fail_at in [0, data.len() / 2] {
                    let tmp = tempfile::tempdir().unwrap();
                    let src =
                        Source { data, read: std::sync::Arc::default(), fail_at: Some(fail_at), errno: Some(errno) };
                    let err =
                        apply_layer(tmp.path(), src, &ApplyOptions::new("l").uncompressed(uncompressed)).unwrap_err();
                    let at = format!("{kind} (taken as plain: {uncompressed}) failing at {fail_at}");
                    assert_eq!(err.raw_os_error(), Some(errno), "{at}: {err}");
                    assert!(matches!(err.cause, Cause::Io(_)), "{at}: {err:?}");
                    let line = err.to_string();
                    assert!(line.starts_with("layer l: cannot read the layer's stream: "), "{at}: {line}");
                }
            }
        }
    }
}
