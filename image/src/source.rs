//! Where blobs come from: an image layout directory, a tar archive read in place, or
//! any [`BlobSource`] (the content store, a registry), and the checks made before a
//! blob is read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media::MAX_ARCHIVE_MEMBERS;

/// Where blobs come from.
pub trait BlobSource: Send + Sync {
    /// Opens a blob by locator.
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>>;

    /// The blob's size as stored, when the source knows it without reading it (a file's
    /// `st_size`, an archive member's size): compared with the descriptor before a
    /// byte is hashed, so a blob that lies about its size is refused at once.
    fn stored_size(&self, _locator: &str) -> io::Result<Option<u64>> {
        Ok(None)
    }

    /// A handle on this source that can outlive the borrow, so that a layer's stream
    /// (and its decompressor) is opened only when the layer is applied rather than all
    /// up front. `None` when the source cannot give one: its layers open eagerly.
    fn shared(&self) -> Option<Arc<dyn BlobSource>> {
        None
    }
}

/// The blobs of an image layout directory (or of any `blobs/sha256/` store).
#[derive(Clone)]
pub struct LayoutDir {
    pub dir: PathBuf,
}

impl LayoutDir {
    /// Opens a file of the layout as a layout holds them: a regular file inside the
    /// directory, reached through no symlink (`openat2` with `RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS`), opened non-blocking so that a FIFO planted as a blob
    /// fails here instead of blocking the open forever, and refused unless regular (a
    /// FIFO, `/dev/zero` or a directory has no digest to check and may never end).
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let root = File::open(&self.dir)?;
        let how =
            OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW).resolve(
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let fd = nix::fcntl::openat2(root.as_raw_fd(), rel, how).map_err(|e| {
            let e = driver_core::sys::errno(e);
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is a symlink; a layout holds regular files", rel.display()),
                )
            } else {
                e
            }
        })?;
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let ft = file.metadata()?.file_type();
        if !ft.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a regular file (a {}); a layout holds regular files", rel.display(), kind_of(&ft)),
            ));
        }
        // Reads of a regular file never block; clear the flag anyway so nothing relies on it.
        nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(driver_core::sys::errno)?;
        Ok(file)
    }
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

impl BlobSource for LayoutDir {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.open_file(&blob_path(locator)?)?))
    }

    fn stored_size(&self, locator: &str) -> io::Result<Option<u64>> {
        Ok(Some(self.open_file(&blob_path(locator)?)?.metadata()?.len()))
    }

    fn shared(&self) -> Option<Arc<dyn BlobSource>> {
        Some(Arc::new(self.clone()))
    }
}

/// A tar archive (oci-archive, docker-archive) read in place: one pass indexes where
/// each member's data is, and blobs are then read by seeking. Only regular members
/// are indexed: a member that is a link, a device or a FIFO is no blob.
#[derive(Clone)]
pub(crate) struct TarArchive {
    path: PathBuf,
    pub(crate) members: Arc<HashMap<String, (u64, u64)>>,
}

impl TarArchive {
    pub(crate) fn index(path: &Path) -> io::Result<TarArchive> {
        let mut members = HashMap::new();
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries_with_seek()? {
            let entry = entry?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
            if entry.header().entry_type().is_file() {
                // A header may claim more data than the archive holds.
                if entry.raw_file_position().saturating_add(entry.size()) > len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("member {name} claims {} bytes, past the end of the archive", entry.size()),
                    ));
                }
                members.insert(name, (entry.raw_file_position(), entry.size()));
                if members.len() > MAX_ARCHIVE_MEMBERS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than {MAX_ARCHIVE_MEMBERS} members; an image archive holds a few blobs"),
                    ));
                }
            }
        }
        Ok(TarArchive { path: path.to_path_buf(), members: Arc::new(members) })
    }

    fn locate(&self, locator: &str) -> io::Result<String> {
        Ok(if locator.contains(':') { blob_path(locator)?.to_string_lossy().into_owned() } else { locator.to_string() })
    }

    /// Reads a whole small member (index.json, manifest.json), refusing one over `max`.
    pub(crate) fn read_small_member(&self, name: &str, max: u64) -> io::Result<Vec<u8>> {
        let size = self.members.get(name).map(|m| m.1).unwrap_or(0);
        if size > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} has {size} bytes, more than the {max} allowed"),
            ));
        }
        let mut out = Vec::new();
        self.read_member(name)?.read_to_end(&mut out)?;
        Ok(out)
    }

    pub(crate) fn read_member(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        let (off, size) = *self
            .members
            .get(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name} is not in the archive")))?;
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(off))?;
        Ok(Box::new(f.take(size)))
    }
}

impl BlobSource for TarArchive {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        self.read_member(&self.locate(locator)?)
    }

    fn stored_size(&self, locator: &str) -> io::Result<Option<u64>> {
        Ok(self.members.get(&self.locate(locator)?).map(|m| m.1))
    }

    fn shared(&self) -> Option<Arc<dyn BlobSource>> {
        Some(Arc::new(self.clone()))
    }
}

/// `sha256:abc` → `blobs/sha256/abc`, refusing anything but a digest
/// ([`Digest::parse`]: one grammar for every digest).
pub fn blob_path(digest: &str) -> io::Result<PathBuf> {
    Digest::parse(digest).map(|d| d.blob_path()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Refuses a blob whose stored size differs from its descriptor's, before reading it.
pub(crate) fn check_stored_size(source: &dyn BlobSource, locator: &str, size: Option<u64>) -> Result<()> {
    let stored = source.stored_size(locator).map_err(|e| Error::read("its size", e))?;
    if let (Some(want), Some(stored)) = (size, stored) {
        if want != stored {
            return Err(Error::StoredSize { stored, want });
        }
    }
    Ok(())
}

/// A blob source whose streams are [`Checked`](driver_core::interrupt::Checked): an unpack from it stops at the next
/// read once an interrupt is requested, and removes what it made.
pub struct CheckedSource<S>(pub S);

impl<S> BlobSource for CheckedSource<S>
where
    S: std::ops::Deref<Target = dyn BlobSource> + Send + Sync,
{
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        if driver_core::interrupt::requested() {
            return Err(io::Error::other("interrupted (SIGINT or SIGTERM)"));
        }
        Ok(Box::new(driver_core::interrupt::Checked(self.0.open(locator)?)))
    }

    fn stored_size(&self, locator: &str) -> io::Result<Option<u64>> {
        self.0.stored_size(locator)
    }

    fn shared(&self) -> Option<std::sync::Arc<dyn BlobSource>> {
        self.0.shared().map(|s| std::sync::Arc::new(CheckedSource(s)) as std::sync::Arc<dyn BlobSource>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_refuse_traversal() {
        assert!(blob_path("sha256:../../etc/passwd").is_err());
        assert!(blob_path("md5:abc").is_err());
        assert!(blob_path(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
