//! The applier: makes each entry's node, confined to the root (see [`super`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use driver_core::error::{Cause, Error, Result};
use driver_core::sys::{self, errno, XattrTarget};
use driver_core::writeback::Flusher;

use super::header::{read_meta, Meta};
use super::names::{join, normalize, show, split, RelPath, MAX_PATH};
use super::{bad_stream, ApplyOptions, ApplyReport, MAX_SPARSE_SIZE};
use crate::whiteout::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Directory metadata applied once the whole tar is in.
#[derive(Clone, Debug)]
pub(super) struct DirMeta {
    pub(super) mode: u32,
    pub(super) atime: TimeSpec,
    pub(super) mtime: TimeSpec,
}

pub(super) struct Applier<'a> {
    pub(super) opts: &'a ApplyOptions,
    pub(super) root: OwnedFd,
    /// Paths this tar has made itself.
    pub(super) extracted: HashSet<RelPath>,
    /// Paths that have something this tar made below them.
    pub(super) ancestors: HashSet<RelPath>,
    /// Directories made during this apply (by an entry or implicitly).
    pub(super) created_dirs: HashSet<RelPath>,
    /// Mode and times to give directories at the end, by path.
    pub(super) dir_meta: BTreeMap<RelPath, DirMeta>,
    /// Directories that existed before and that the engine changed: their times.
    pub(super) touched: HashMap<RelPath, (TimeSpec, TimeSpec)>,
    /// Directories an entry of the tar described (the root as `""`).
    pub(super) described: HashSet<RelPath>,
    pub(super) buf: Vec<u8>,
    pub(super) report: ApplyReport,
    /// Starts the disk on the data written so far (see [`driver_core::writeback`]).
    pub(super) flusher: Option<Arc<Flusher>>,
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
    pub(super) fn new(opts: &'a ApplyOptions, root: OwnedFd, flusher: Option<Arc<Flusher>>) -> Self {
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

    pub(super) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    fn err(&self, path: &[u8], cause: impl Into<Cause>) -> Error {
        Error::at(&self.opts.layer, show(path), cause)
    }

    pub(super) fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
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

    pub(super) fn mark_extracted(&mut self, path: &[u8]) {
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
    pub(super) fn touch(&mut self, dir: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
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
    pub(super) fn dir(&mut self, dir: &[u8], mtime: TimeSpec) -> Result<OwnedFd> {
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

    pub(super) fn resolve_error(&self, dir: &[u8], e: io::Error) -> Error {
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
                    self.record_gone(path);
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
        self.record_file(path, &file, &digest)?;
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
        self.record_named(d.fd.as_fd(), name, path, Some(target))?;
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
        .map_err(|e| Error::new(Cause::Link { target: show(&target), source: errno(e) }))?;
        self.record_link(path, &target);
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
        self.record_named(d.fd.as_fd(), name, path, None)?;
        self.last_dir = Some(d);
        self.mark_extracted(path);
        Ok(())
    }
}
