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
                Error::NotRegular { name: rel.display().to_string(), is: "a symlink".into() }.into_io()
            } else {
                e
            }
        })?;
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let ft = file.metadata()?.file_type();
        if !ft.is_file() {
            let is = format!("not a regular file (a {})", kind_of(&ft));
            return Err(Error::NotRegular { name: rel.display().to_string(), is }.into_io());
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

impl LayoutDir {
    /// Blob `locator`, which the image's documents name: one the layout lacks makes the
    /// image not what it says ([`Error::MissingMember`]), not a file the user mistyped.
    fn open_blob(&self, locator: &str) -> io::Result<File> {
        let rel = blob_path(locator)?;
        self.open_file(&rel).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::MissingMember { name: rel.display().to_string(), of: "layout" }.into_io(),
            _ => e,
        })
    }
}

impl BlobSource for LayoutDir {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.open_blob(locator)?))
    }

    fn stored_size(&self, locator: &str) -> io::Result<Option<u64>> {
        Ok(Some(self.open_blob(locator)?.metadata()?.len()))
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
    /// Indexes the archive at `path`. A file that is not a tar (`/etc/passwd`, a gzipped
    /// archive, noise) is refused from its first block, saying what it looks like; a
    /// tar whose later header does not parse is refused without the tar reader's words,
    /// which quote the header's bytes. An io error (EACCES, EIO) keeps its errno.
    pub(crate) fn index(path: &Path) -> Result<TarArchive> {
        let not_tar = |why: String| Error::NotAnArchive { why };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut head = Vec::with_capacity(512);
        (&mut file).take(512).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
        if let Some(why) = not_a_tar_head(&head) {
            return Err(not_tar(why));
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        let mut members = HashMap::new();
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut archive = tar::Archive::new(file);
        // The tar reader's own errors quote the bytes of the header it refused: said in
        // strata's words instead, an errno kept.
        let unreadable = |read: usize, e: io::Error| match driver_core::error::os_error(&e) {
            Some(_) => Error::io(path, e),
            None => not_tar(format!("a tar header after its first {read} member(s) does not parse")),
        };
        for (read, entry) in archive.entries_with_seek().map_err(|e| unreadable(0, e))?.enumerate() {
            let entry = entry.map_err(|e| unreadable(read, e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
            if entry.header().entry_type().is_file() {
                // A header may claim more data than the archive holds.
                if entry.raw_file_position().saturating_add(entry.size()) > len {
                    let size = entry.size();
                    return Err(not_tar(format!("member {name:?} claims {size} bytes, past the end of the file")));
                }
                members.insert(name, (entry.raw_file_position(), entry.size()));
                if members.len() > MAX_ARCHIVE_MEMBERS {
                    return Err(not_tar(format!(
                        "more than {MAX_ARCHIVE_MEMBERS} members; an image archive holds a few blobs"
                    )));
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
            return Err(Error::TooLarge { what: name.to_string(), size, max }.into_io());
        }
        let mut out = Vec::new();
        self.read_member(name)?.read_to_end(&mut out)?;
        Ok(out)
    }

    pub(crate) fn read_member(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        let (off, size) = *self
            .members
            .get(name)
            .ok_or_else(|| Error::MissingMember { name: name.to_string(), of: "archive" }.into_io())?;
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

/// Why a file whose first (up to) 512 bytes are `head` is not a tar, or `None` when
/// they are a tar header (or the zero block that ends an empty archive). The checksum
/// is the tar crate's: the stored one read, the header's own computed by `set_cksum`.
fn not_a_tar_head(head: &[u8]) -> Option<String> {
    const COMPRESSED: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (b"BZh", "bzip2"),
    ];
    if head.is_empty() {
        return Some("an empty file (0 bytes)".into());
    }
    if let Some((_, what)) = COMPRESSED.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(format!("it looks like a {what} stream: decompress it first, image archives are plain tar"));
    }
    let Ok(block) = <&[u8; 512]>::try_from(head) else {
        return Some(format!("{} bytes, shorter than one tar header", head.len()));
    };
    if block.iter().all(|&b| b == 0) {
        return None;
    }
    let header = tar::Header::from_byte_slice(block);
    let mut computed = header.clone();
    computed.set_cksum();
    match (header.cksum(), computed.cksum()) {
        (Ok(stored), Ok(sum)) if stored == sum => None,
        _ => Some("no tar header: checksum mismatch".into()),
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

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Files handed over as image archives that are not tars: each is refused as
    /// `NotAnArchive` saying what it is, and no byte of the file is in the words. The
    /// old code gave the tar reader's error, which quoted the header
    /// (`numeric field was not a number: login\nsy when getting cksum for root:x:0:0:…`).
    #[test]
    fn a_file_that_is_not_a_tar_is_refused_in_strata_words() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = b"root:x:0:0:root:/root:/bin/bash\nsys:x:3:3:sys:/dev:/usr/sbin/nologin\n".repeat(12);
        let mut gz = vec![0x1f, 0x8b, 8, 0];
        gz.extend_from_slice(&passwd);
        // A tar whose second header was overwritten with text (a torn copy).
        let mut torn = tar_of(&[("index.json", b"{}"), ("oci-layout", b"{}")]);
        torn[1024..1024 + 64].copy_from_slice(&passwd[..64]);
        let cases: [(&str, &[u8], &str); 5] = [
            ("passwd", &passwd, "no tar header: checksum mismatch"),
            ("empty", b"", "an empty file (0 bytes)"),
            ("short", b"root:x:0:0", "10 bytes, shorter than one tar header"),
            ("gzipped", &gz, "it looks like a gzip stream"),
            ("torn", &torn, "a tar header after its first 1 member(s) does not parse"),
        ];
        for (name, bytes, want) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let e = TarArchive::index(&p).err().unwrap_or_else(|| panic!("{name}: indexed"));
            assert!(matches!(&e, Error::NotAnArchive { why } if why.contains(want)), "{name}: {e:?}");
            let said = e.to_string();
            assert!(!said.contains("root") && !said.contains("sys") && !said.contains('\n'), "{name}: {said}");
        }
        // A tar, and the zero block of an empty one, are read.
        let p = dir.path().join("good");
        std::fs::write(&p, tar_of(&[("index.json", b"{}")])).unwrap();
        assert_eq!(TarArchive::index(&p).unwrap().members.len(), 1);
        std::fs::write(&p, [0u8; 1024]).unwrap();
        assert!(TarArchive::index(&p).unwrap().members.is_empty());
    }

    /// Generated noise (fixed seed) is never taken for a tar, and its bytes never reach
    /// the error's words.
    #[test]
    fn noise_is_no_tar_and_its_bytes_are_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let mut x: u64 = 0x5eed_1234;
        for i in 0..200 {
            let len = 1 + (i * 37) % 2000;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly printable with escapes: what would show on a terminal.
                    if x.is_multiple_of(5) {
                        0x1b
                    } else {
                        b'a' + (x % 26) as u8
                    }
                })
                .collect();
            let p = dir.path().join("noise");
            std::fs::write(&p, &data).unwrap();
            let e = TarArchive::index(&p).err().unwrap_or_else(|| panic!("noise {i} indexed"));
            assert!(matches!(e, Error::NotAnArchive { .. }), "{i}: {e:?}");
            let said = e.to_string();
            assert!(!said.chars().any(|c| c.is_control()), "{i}: {said:?}");
            // No run of 6 of the file's bytes in the words.
            assert!(!data.windows(6).any(|w| said.as_bytes().windows(6).any(|s| s == w)), "{i}: {said}");
        }
    }

    #[test]
    fn blob_paths_refuse_traversal() {
        assert!(blob_path("sha256:../../etc/passwd").is_err());
        assert!(blob_path("md5:abc").is_err());
        assert!(blob_path(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
