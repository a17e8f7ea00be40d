//! The writer of OCI layer tars from diff entries: sorted, hardlinks kept, times with
//! nanoseconds, xattrs as `SCHILY.xattr.*` records (see the canonical rules in
//! [`crate::diff`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

use super::DiffEntry;
use driver_core::error::{Context, Error, Result};
use driver_core::sys::{self, XattrTarget};
use driver_core::ReservedXattrs;

/// Counts bytes written through it.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the xattrs of `path` (not following a final symlink), without those in the
/// `reserved` namespaces.
pub fn xattrs_of(path: &Path, reserved: &ReservedXattrs) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    xattrs_at(&c, reserved)
}

fn xattrs_at(path: &std::ffi::CStr, reserved: &ReservedXattrs) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut all = sys::read_xattrs(XattrTarget::NoFollow(path))?;
    all.retain(|(n, _)| !reserved.contains(n));
    Ok(all)
}

/// The directory an entry's source is in, opened by descriptor (its path may be longer
/// than PATH_MAX); entries come sorted, so most share the last one's.
#[derive(Default)]
struct SourceDir {
    open: Option<(PathBuf, OwnedFd)>,
}

impl SourceDir {
    fn of<'a>(&mut self, source: &'a Path) -> io::Result<(BorrowedFd<'_>, &'a OsStr)> {
        let (dir, name) = (source.parent().unwrap_or(Path::new("/")), source.file_name().unwrap_or_default());
        if self.open.as_ref().is_none_or(|(p, _)| p != dir) {
            self.open = Some((dir.to_path_buf(), sys::open_dir_long(dir)?));
        }
        Ok((self.open.as_ref().expect("just opened").1.as_fd(), name))
    }
}

/// Writes `entries` as an uncompressed OCI layer tar (sorted, hardlinks kept), without
/// the xattrs in the `reserved` namespaces (the walk refused every other use of them,
/// so what is left is a whiteout format's bookkeeping); returns the bytes written.
/// `layer` names the layer in errors.
pub fn write_tar(
    layer: &str,
    mut entries: Vec<DiffEntry>,
    reserved: &ReservedXattrs,
    out: &mut dyn Write,
) -> Result<u64> {
    entries.sort_by_key(|e| e.tar_path());
    entries.dedup_by_key(|e| e.tar_path());
    let mut counting = Counting { inner: out, bytes: 0 };
    {
        let mut builder = tar::Builder::new(&mut counting);
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let (mut dirs, mut data_dirs) = (SourceDir::default(), SourceDir::default());
        for entry in &entries {
            let tar_path = entry.tar_path();
            write_entry(&mut builder, entry, &tar_path, reserved, &mut links, &mut dirs, &mut data_dirs)
                .map_err(|e| e.in_layer(layer).with_path(&tar_path))?;
        }
        builder.finish().map_err(|e| Error::layer(layer, e))?;
    }
    counting.flush().map_err(|e| Error::layer(layer, e))?;
    Ok(counting.bytes)
}

fn write_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &DiffEntry,
    tar_path: &Path,
    reserved: &ReservedXattrs,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut SourceDir,
    data_dirs: &mut SourceDir,
) -> Result<()> {
    let (source, data) = match entry {
        DiffEntry::Whiteout { .. } | DiffEntry::Opaque { .. } => {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            builder.append_data(&mut h, tar_path, io::empty())?;
            return Ok(());
        }
        DiffEntry::Node { source, data, .. } => (source, data),
    };
    // Everything is read relative to the source's directory: a path beyond PATH_MAX
    // cannot be opened, stat-ed or read as a whole.
    let (dir, name) = dirs.of(source).at_path(source)?;
    let md = sys::lstat_at(dir, name)
        .at_path(source)?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        .at_path(source)?;
    let kind = sys::file_type(&md);
    let mut h = tar::Header::new_gnu();
    h.set_mode(md.st_mode & 0o7777);
    h.set_uid(md.st_uid.into());
    h.set_gid(md.st_gid.into());
    h.set_mtime(md.st_mtime.max(0) as u64);
    h.set_size(0);
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if md.st_mtime_nsec != 0 || md.st_mtime < 0 {
        let t = md.st_mtime as i128 * 1_000_000_000 + md.st_mtime_nsec as i128;
        let (s, ns) = (t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000));
        pax.push(("mtime".into(), format!("{s}.{ns:09}").into_bytes()));
    }
    for (name, value) in xattrs_at(&sys::proc_path(dir, name), reserved).at_path(source)? {
        pax.push((format!("SCHILY.xattr.{name}"), value));
    }
    let write_pax = |builder: &mut tar::Builder<W>| -> io::Result<()> {
        if !pax.is_empty() {
            builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        Ok(())
    };
    if kind != SFlag::S_IFDIR && md.st_nlink > 1 {
        if let Some(first) = links.get(&(md.st_dev, md.st_ino)) {
            h.set_entry_type(tar::EntryType::Link);
            builder.append_link(&mut h, tar_path, first)?;
            return Ok(());
        }
        links.insert((md.st_dev, md.st_ino), tar_path.to_path_buf());
    }
    match kind {
        SFlag::S_IFDIR => {
            h.set_entry_type(tar::EntryType::Directory);
            write_pax(builder)?;
            builder.append_data(&mut h, tar_path, io::empty())?;
        }
        SFlag::S_IFREG => {
            h.set_entry_type(tar::EntryType::Regular);
            let file = match data {
                // A metadata-only copy-up: the data is in a lower layer's file.
                Some(from) => {
                    let (d, n) = data_dirs.of(from).at_path(from)?;
                    sys::open_at(d, n, OFlag::O_RDONLY, 0).at_path(from)?
                }
                None => sys::open_at(dir, name, OFlag::O_RDONLY, 0).at_path(source)?,
            };
            let file = File::from(file);
            let size = file.metadata().at_path(data.as_deref().unwrap_or(source))?.len();
            h.set_size(size);
            write_pax(builder)?;
            // A file that changes size while the tar is written would corrupt the stream.
            builder.append_data(&mut h, tar_path, ExactReader { inner: file.take(size), left: size })?;
        }
        SFlag::S_IFLNK => {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name).map_err(sys::errno).at_path(source)?;
            write_pax(builder)?;
            builder.append_link(&mut h, tar_path, target)?;
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
            h.set_entry_type(match kind {
                SFlag::S_IFCHR => tar::EntryType::Char,
                SFlag::S_IFBLK => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            });
            if kind != SFlag::S_IFIFO {
                h.set_device_major(nix::sys::stat::major(md.st_rdev) as u32)?;
                h.set_device_minor(nix::sys::stat::minor(md.st_rdev) as u32)?;
            }
            write_pax(builder)?;
            builder.append_data(&mut h, tar_path, io::empty())?;
        }
        // Sockets cannot be carried in a tar; like Go's archive/tar, leave them out.
        _ => {}
    }
    Ok(())
}

/// Fails instead of writing a short entry if the file shrank meanwhile.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being written to the tar"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
