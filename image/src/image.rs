//! Reading OCI images: an image layout directory (`DIR` or `DIR:TAG`), an oci-archive
//! (the same layout in a tar) or a docker-archive (`docker save`: `manifest.json`).
//!
//! Every blob is checked against its digest as it streams, and every layer's
//! uncompressed stream against the config's `rootfs.diff_ids`; a mismatch fails the
//! read at its end, so the layer being applied is never committed. Layers are named by
//! chain ID (`ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
//! DiffID(Ln))`), so two images on one base share its layers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use driver_core::digest::{sha256, Hashing};
use driver_core::error::{Cause, Error, Result};

use crate::content::ContentStore;

/// The annotation that tags a manifest in an image layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The most an index (`index.json`, a nested index), a manifest or a docker-archive's
/// `manifest.json` may hold. containerd refuses manifests over 4 MiB; real ones are a
/// few KiB. Parsed JSON takes several times its size in memory (a map of a million
/// tiny annotations is ~10x), so this is also what keeps an unpack's memory bounded.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The most an image config may hold (long histories make configs the biggest JSON).
pub const MAX_CONFIG: u64 = 16 << 20;

/// The deepest a manifest or config may nest arrays and objects; real ones nest 4 or 5
/// levels. The typed parsers (oci-spec over serde_json) skip an unknown key's value
/// without counting its levels, but the content store reads a kept manifest and config
/// back as `serde_json::Value`, which stops at 128: an image that passed here failed at
/// the end of its unpack, once its blobs were written. Checked here, it is refused
/// before anything is written.
pub const MAX_JSON_DEPTH: usize = 64;

/// Refuses a JSON document nesting arrays and objects more than [`MAX_JSON_DEPTH`]
/// levels deep. A scan of the brackets outside strings, not a parse: a parse into a
/// `Value` would take several times the document's size in memory to find out.
fn check_depth(src: &str, what: &str, json: &[u8]) -> Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(bad(
                        src,
                        format!("{what}: JSON nested more than {MAX_JSON_DEPTH} levels deep (real ones nest 5)"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The most members an archive may have: each costs an entry in the index of members.
pub const MAX_ARCHIVE_MEMBERS: usize = 1_000_000;

/// Checks an image name against the reference grammar (`[host[:port]/]path[:tag][@digest]`,
/// lowercase path components, the grammar docker and containerd use), which also keeps
/// a name from being `.`, `..`, empty, or anything that reads as a path.
pub fn validate_name(name: &str) -> Result<()> {
    if plainly_valid(name) {
        return Ok(());
    }
    match name.parse::<oci_spec::distribution::Reference>() {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::new(Cause::Other(format!(
            "image name {name:?}: invalid reference format ({e}); use e.g. `repo/app:tag` (lowercase)"
        )))),
    }
}

/// Whether `name` has the shape most image names have, which the reference grammar
/// takes: `path[:tag]`, the path of `/`-separated components of lowercase letters and
/// digits joined by single `.`, `_` or `-` (the first may then be read as a registry
/// host, which takes those too), the tag of up to 128 letters, digits, `_`, `.`, `-`
/// not starting with `.` or `-`. Checked by hand because oci-spec's parse compiles its
/// reference regex first (Unicode `\w`): about 50 ms of CPU, a twentieth of a whole
/// unpack of the python3 image. Anything else goes to the crate's parse; the test
/// `plainly_valid_names_are_valid_references` checks this takes nothing it refuses.
fn plainly_valid(name: &str) -> bool {
    let (path, tag) = match name.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (name, None),
    };
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let tag_ok = tag.is_none_or(|t| {
        let t = t.as_bytes();
        (1..=128).contains(&t.len()) && word(t[0]) && t.iter().all(|&b| word(b) || b == b'.' || b == b'-')
    });
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let component_ok = |c: &str| {
        let c = c.as_bytes();
        !c.is_empty()
            && alnum(c[0])
            && alnum(c[c.len() - 1])
            && c.iter().all(|&b| alnum(b) || b"._-".contains(&b))
            && c.windows(2).all(|w| alnum(w[0]) || alnum(w[1]))
    };
    // "library/" may be put before a one-component name: the whole stays under 255.
    tag_ok && path.len() <= 200 && path.split('/').all(component_ok)
}

/// One layer of an image, as the manifest and config describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// Where the blob is found in its source (a digest, or a path in a docker-archive).
    pub locator: String,
    /// `sha256:…` of the blob, when the source names one (docker-archive layers
    /// stored by path have none: their diff_id is their digest).
    pub digest: Option<String>,
    pub media_type: String,
    pub size: Option<u64>,
    pub diff_id: String,
}

/// A resolved image: its layers bottom to top and their chain IDs.
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub config_digest: String,
    /// Where the config is found in its source (its digest, or a docker-archive path).
    pub config_locator: String,
    /// The manifest as the source holds it (none in a docker-archive).
    pub manifest: Option<Vec<u8>>,
    pub layers: Vec<LayerBlob>,
    pub chain_ids: Vec<String>,
}

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
struct TarArchive {
    path: PathBuf,
    members: Arc<HashMap<String, (u64, u64)>>,
}

impl TarArchive {
    fn index(path: &Path) -> io::Result<TarArchive> {
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
    fn read_small_member(&self, name: &str, max: u64) -> io::Result<Vec<u8>> {
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

    fn read_member(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
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

/// `sha256:abc` → `blobs/sha256/abc`, refusing anything but a plain hex digest.
pub fn blob_path(digest: &str) -> io::Result<PathBuf> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad digest {digest:?}")))?;
    let ok =
        alg == "sha256" && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !ok {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unsupported or malformed digest {digest:?}")));
    }
    Ok(PathBuf::from(format!("blobs/{alg}/{hex}")))
}

/// Checks a stream against an expected sha256 (and size) when it ends.
pub struct VerifyingReader<R> {
    inner: Hashing<R>,
    expected: String,
    size: Option<u64>,
    what: String,
}

impl<R: Read> VerifyingReader<R> {
    /// `what` names the stream in the error, e.g. `blob sha256:…`.
    pub fn new(inner: R, expected: &str, size: Option<u64>, what: String) -> Self {
        VerifyingReader { inner: Hashing::new(inner), expected: expected.to_string(), size, what }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = self.inner.byte_count();
        check_not_over(&self.what, read, self.size)?;
        if n == 0 && !buf.is_empty() {
            check_whole(&self.what, read, self.size, &self.inner.digest(), &self.expected)?;
        }
        Ok(n)
    }
}

/// Refuses a stream longer than its descriptor's `size`, as soon as it is.
pub(crate) fn check_not_over(what: &str, read: u64, size: Option<u64>) -> io::Result<()> {
    match size {
        Some(size) if read > size => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} has more than the {size} bytes its descriptor says"),
        )),
        _ => Ok(()),
    }
}

/// Checks a stream that ended against its descriptor's size and digest.
pub(crate) fn check_whole(what: &str, read: u64, size: Option<u64>, got: &str, expected: &str) -> io::Result<()> {
    if let Some(size) = size.filter(|s| *s != read) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} has {read} bytes, not the {size} its descriptor says (truncated?)"),
        ));
    }
    if got != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} has digest {got}, not {expected} (tampered or corrupt)"),
        ));
    }
    Ok(())
}

/// Chain IDs of a list of diff_ids.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(id);
    }
    out
}

fn bad(src: &str, msg: impl Into<String>) -> Error {
    Error::new(Cause::Other(format!("image {src}: {}", msg.into())))
}

/// Refuses a blob whose stored size differs from its descriptor's, before reading it.
fn check_stored_size(source: &dyn BlobSource, locator: &str, size: Option<u64>) -> io::Result<()> {
    if let (Some(want), Some(have)) = (size, source.stored_size(locator)?) {
        if want != have {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the blob has {have} bytes, not the {want} its descriptor says"),
            ));
        }
    }
    Ok(())
}

/// Reads a whole small blob (index, manifest, config) of at most `max` bytes,
/// checking its digest.
fn read_small(source: &dyn BlobSource, src: &str, digest: &str, size: Option<u64>, max: u64) -> Result<Vec<u8>> {
    if size.is_some_and(|s| s > max) {
        return Err(bad(
            src,
            format!("{digest} claims {} bytes, more than the {max} a manifest or config may have", size.unwrap_or(0)),
        ));
    }
    check_stored_size(source, digest, size).map_err(|e| bad(src, format!("blob {digest}: {e}")))?;
    let blob = source.open(digest).map_err(|e| bad(src, format!("blob {digest}: {e}")))?;
    let mut r = VerifyingReader::new(blob.take(max + 1), digest, size, format!("blob {digest}"));
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| bad(src, e.to_string()))?;
    Ok(out)
}

/// The architecture name OCI uses for this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI platform, `os/architecture[/variant]` as `--platform`, docker and podman
/// spell it. Image layouts, archives and registries pick their manifest with
/// [`pick_platform`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This host's: linux and the OCI name of its architecture.
    pub fn host() -> Platform {
        Platform { os: "linux".into(), architecture: host_arch().into(), variant: None }
    }

    /// `os/arch[/variant]`, or `arch` alone (linux).
    pub fn parse(s: &str) -> Result<Platform> {
        let word = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let parts: Vec<&str> = s.split('/').collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [a] => ("linux", *a, None),
            [o, a] => (*o, *a, None),
            [o, a, v] => (*o, *a, Some(v.to_string())),
            _ => ("", "", None),
        };
        if !word(os) || !word(architecture) || variant.as_deref().is_some_and(|v| !word(v)) {
            return Err(Error::new(Cause::Other(format!(
                "--platform {:?}: expected OS/ARCH[/VARIANT], as linux/amd64 or linux/arm/v7",
                s.escape_debug().to_string()
            ))));
        }
        Ok(Platform { os: os.into(), architecture: architecture.into(), variant })
    }

    /// `os`, `architecture` and `variant` of an index entry's `platform` or of a config.
    pub fn from_json(v: &serde_json::Value) -> Option<Platform> {
        Some(Platform {
            os: v["os"].as_str()?.to_string(),
            architecture: v["architecture"].as_str()?.to_string(),
            variant: v["variant"].as_str().map(str::to_string),
        })
    }

    /// Whether an image for `other` is what this platform asks for: os and
    /// architecture equal, and the variant too when this one names one.
    pub fn accepts(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// Which of an index's entries (their platforms; `None` for an entry that names none,
/// taken as matching: its config decides) is for `want`: the first that is; when none
/// is, an error naming the platforms present.
pub fn pick_platform(entries: &[Option<Platform>], want: &Platform) -> std::result::Result<usize, String> {
    if let Some(i) = entries.iter().position(|p| p.as_ref().is_none_or(|p| want.accepts(p))) {
        return Ok(i);
    }
    let present: Vec<String> = entries.iter().flatten().map(Platform::to_string).collect();
    Err(format!("no manifest for {want}; the image is for {}", present.join(", ")))
}

/// The platform an image's config names, checked against an explicit `--platform`
/// (a single-platform image has no index to pick from).
fn check_config_platform(source: &dyn BlobSource, src: &str, image: &Image, want: &Platform) -> Result<()> {
    // By its locator: a docker-archive keeps it under a path, not a digest.
    let blob = source.open(&image.config_locator).map_err(|e| bad(src, format!("config: {e}")))?;
    let what = format!("config {}", image.config_digest);
    let mut cfg = Vec::new();
    VerifyingReader::new(blob.take(MAX_CONFIG + 1), &image.config_digest, None, what)
        .read_to_end(&mut cfg)
        .map_err(|e| bad(src, e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&cfg).map_err(|e| bad(src, format!("config {}: {e}", image.config_digest)))?;
    match Platform::from_json(&json) {
        Some(p) if !want.accepts(&p) => {
            Err(bad(src, format!("--platform {want} matches nothing: the image is for {p} only")))
        }
        _ => Ok(()),
    }
}

/// skopeo's and podman's transport prefixes that name a local image (`oci:`,
/// `oci-archive:`, `docker-archive:`), split off; a path that exists is taken as it is.
fn split_transport(spec: &str) -> (&str, Option<&'static str>) {
    if Path::new(spec).exists() {
        return (spec, None);
    }
    for t in ["oci", "oci-archive", "docker-archive"] {
        if let Some(rest) = spec.strip_prefix(t).and_then(|r| r.strip_prefix(':')) {
            return (rest, Some(t));
        }
    }
    (spec, None)
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// Opens an image source as `image unpack` takes it: `DIR`, `DIR:TAG`, or an archive.
pub fn open_source(spec: &str, platform: Option<&str>) -> Result<(Box<dyn BlobSource>, Image)> {
    if spec.starts_with("docker://") {
        return Err(bad(spec, "a registry image: `strata image pull` and `strata image unpack` take docker://REF"));
    }
    let want = platform.map(Platform::parse).transpose()?;
    let (source, image, kind) = open_path(spec, want.as_ref())?;
    let (_, transport) = split_transport(spec);
    if let Some(t) = transport.filter(|t| *t != kind) {
        let what = match kind {
            "oci" => "an OCI image layout (oci:)",
            "oci-archive" => "an oci-archive (oci-archive:)",
            _ => "a docker-archive (docker-archive:)",
        };
        return Err(bad(spec, format!("it is {what}, not what {t}: names")));
    }
    if let Some(want) = &want {
        check_config_platform(source.as_ref(), spec, &image, want)?;
    }
    Ok((source, image))
}

/// The image at a path (a layout directory or an archive, after an optional
/// transport prefix), and which of `oci`, `oci-archive`, `docker-archive` it is.
fn open_path(full: &str, want: Option<&Platform>) -> Result<(Box<dyn BlobSource>, Image, &'static str)> {
    let spec = split_transport(full).0;
    let (path, tag) = if Path::new(spec).exists() {
        (PathBuf::from(spec), None)
    } else {
        // A tag may hold a colon itself (`DIR:app:v1`, as `image save` tags a layout):
        // the path is the longest prefix before a colon that exists.
        let split = spec.match_indices(':').rev().map(|(i, _)| (&spec[..i], &spec[i + 1..]));
        match split.into_iter().find(|(p, _)| Path::new(p).exists()) {
            Some((p, t)) => (PathBuf::from(p), Some(t.to_string())),
            None => return Err(bad(full, "no such file or directory")),
        }
    };
    let host = Platform::host();
    let want = want.unwrap_or(&host);
    if path.is_dir() {
        if !path.join("oci-layout").exists() {
            return Err(bad(full, "a directory without an oci-layout file is not an OCI image layout"));
        }
        let source = LayoutDir { dir: path.clone() };
        let index = source
            .open_file(Path::new("index.json"))
            .and_then(|f| {
                let mut out = Vec::new();
                f.take(MAX_MANIFEST + 1).read_to_end(&mut out)?;
                if out.len() as u64 > MAX_MANIFEST {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than the {MAX_MANIFEST} bytes an index may have"),
                    ));
                }
                Ok(out)
            })
            .map_err(|e| bad(full, format!("index.json: {e}")))?;
        let image = resolve_oci(&source, full, &index, tag.as_deref(), want)?;
        return Ok((Box::new(source), image, "oci"));
    }
    let archive = TarArchive::index(&path).map_err(|e| bad(full, format!("not a readable tar archive: {e}")))?;
    if archive.members.contains_key("index.json") {
        let index = archive.read_small_member("index.json", MAX_MANIFEST).map_err(|e| bad(full, e.to_string()))?;
        let image = resolve_oci(&archive, full, &index, tag.as_deref(), want)?;
        return Ok((Box::new(archive), image, "oci-archive"));
    }
    if archive.members.contains_key("manifest.json") {
        let image = resolve_docker(&archive, full, tag.as_deref())?;
        return Ok((Box::new(archive), image, "docker-archive"));
    }
    Err(bad(full, "neither an OCI image layout (index.json) nor a docker-archive (manifest.json)"))
}

fn resolve_oci(source: &dyn BlobSource, src: &str, index: &[u8], tag: Option<&str>, want: &Platform) -> Result<Image> {
    let index = ImageIndex::from_reader(index).map_err(|e| bad(src, format!("index.json: {e}")))?;
    let candidates: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            None => true,
            Some(t) => d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).is_some_and(|n| n == t),
        })
        .collect();
    let desc = match candidates.as_slice() {
        [one] => *one,
        [] => return Err(bad(src, format!("no manifest tagged {:?} in index.json", tag.unwrap_or("")))),
        many => {
            let tags: Vec<String> =
                many.iter().filter_map(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned()).collect();
            return Err(bad(
                src,
                format!("it holds {} images; pick one with {src}:TAG (tags: {})", many.len(), tags.join(", ")),
            ));
        }
    };
    let name = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME).cloned())
        .or_else(|| tag.map(str::to_string))
        .unwrap_or_else(|| "latest".into());
    let mut digest = desc.digest().to_string();
    let mut media_type = desc.media_type().to_string();
    let mut size = Some(desc.size());
    // Nested indexes and manifest lists: pick this host's platform.
    for _ in 0..8 {
        if !is_index(&media_type) {
            break;
        }
        let data = read_small(source, src, &digest, size, MAX_MANIFEST)?;
        let nested = ImageIndex::from_reader(&data[..]).map_err(|e| bad(src, format!("{digest}: {e}")))?;
        let platforms: Vec<Option<Platform>> = nested
            .manifests()
            .iter()
            .map(|d| {
                d.platform().as_ref().map(|p| Platform {
                    os: p.os().to_string(),
                    architecture: p.architecture().to_string(),
                    variant: p.variant().clone(),
                })
            })
            .collect();
        let i = pick_platform(&platforms, want).map_err(|e| bad(src, format!("{e} (index {digest})")))?;
        let pick = &nested.manifests()[i];
        digest = pick.digest().to_string();
        media_type = pick.media_type().to_string();
        size = Some(pick.size());
    }
    let data = read_small(source, src, &digest, size, MAX_MANIFEST)?;
    image_from_manifest(source, src, name, &data)
}

/// An OCI or Docker schema 2 manifest (the same shape) to an [`Image`].
pub fn image_from_manifest(source: &dyn BlobSource, src: &str, name: String, manifest: &[u8]) -> Result<Image> {
    let manifest_bytes = manifest.to_vec();
    check_depth(src, "manifest", manifest)?;
    let manifest = ImageManifest::from_reader(manifest).map_err(|e| bad(src, format!("manifest: {e}")))?;
    let cfg_digest = manifest.config().digest().to_string();
    let cfg = read_small(source, src, &cfg_digest, Some(manifest.config().size()), MAX_CONFIG)?;
    check_depth(src, &format!("config {cfg_digest}"), &cfg)?;
    let config =
        ImageConfiguration::from_reader(&cfg[..]).map_err(|e| bad(src, format!("config {cfg_digest}: {e}")))?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(
            src,
            format!("the manifest lists {} layers but the config {} diff_ids", manifest.layers().len(), diff_ids.len()),
        ));
    }
    let mut layers = Vec::new();
    for (d, diff_id) in manifest.layers().iter().zip(&diff_ids) {
        let media_type = d.media_type().to_string();
        if !is_layer_type(&media_type) {
            return Err(bad(src, format!("layer {} has media type {media_type}, which is not a layer", d.digest())));
        }
        blob_path(diff_id).map_err(|e| bad(src, e.to_string()))?;
        layers.push(LayerBlob {
            locator: d.digest().to_string(),
            digest: Some(d.digest().to_string()),
            media_type,
            size: Some(d.size()),
            diff_id: diff_id.clone(),
        });
    }
    Ok(Image {
        name,
        config_locator: cfg_digest.clone(),
        config_digest: cfg_digest,
        manifest: Some(manifest_bytes),
        chain_ids: chain_ids(&diff_ids),
        layers,
    })
}

fn is_layer_type(t: &str) -> bool {
    t.starts_with("application/vnd.oci.image.layer.")
        || t.starts_with("application/vnd.docker.image.rootfs.")
        || t == "application/x-tar"
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn resolve_docker(archive: &TarArchive, src: &str, tag: Option<&str>) -> Result<Image> {
    let data = archive.read_small_member("manifest.json", MAX_MANIFEST).map_err(|e| bad(src, e.to_string()))?;
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&data).map_err(|e| bad(src, format!("manifest.json: {e}")))?;
    let tags = |e: &DockerManifestEntry| e.repo_tags.clone().unwrap_or_default();
    let picked: Vec<&DockerManifestEntry> = entries
        .iter()
        .filter(|e| match tag {
            None => true,
            // `docker save` and skopeo qualify names (`docker.io/strata/img:v1` for
            // `strata/img:v1`).
            Some(t) => tags(e).iter().any(|rt| {
                rt == t || rt.ends_with(&format!("/{t}")) || rt.rsplit_once(':').is_some_and(|(_, x)| x == t)
            }),
        })
        .collect();
    let entry = match picked.as_slice() {
        [one] => *one,
        [] => return Err(bad(src, format!("no image tagged {:?} in manifest.json", tag.unwrap_or("")))),
        _ => return Err(bad(src, "it holds several images; pick one with ARCHIVE:TAG")),
    };
    // `docker save` names the config after its digest, as `<hex>.json` or
    // `blobs/sha256/<hex>`; check it against that name.
    let hex = entry.config.trim_end_matches(".json").rsplit('/').next().unwrap_or("").to_string();
    let cfg_digest = format!("sha256:{hex}");
    let mut cfg = Vec::new();
    let reader = archive.read_member(&entry.config).map_err(|e| bad(src, e.to_string()))?;
    VerifyingReader::new(reader.take(MAX_CONFIG + 1), &cfg_digest, None, format!("config {}", entry.config))
        .read_to_end(&mut cfg)
        .map_err(|e| bad(src, e.to_string()))?;
    if cfg.len() as u64 > MAX_CONFIG {
        return Err(bad(src, format!("config {} has more than {MAX_CONFIG} bytes", entry.config)));
    }
    check_depth(src, &format!("config {cfg_digest}"), &cfg)?;
    let config = ImageConfiguration::from_reader(&cfg[..]).map_err(|e| bad(src, format!("config: {e}")))?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != entry.layers.len() {
        return Err(bad(
            src,
            format!("manifest.json lists {} layers but the config {} diff_ids", entry.layers.len(), diff_ids.len()),
        ));
    }
    // As for an OCI image: a diff_id is a digest, so a chain ID is one too and can
    // never name a user's layer (such as a container's `c-victim`).
    for diff_id in &diff_ids {
        blob_path(diff_id).map_err(|e| bad(src, format!("config diff_id: {e}")))?;
    }
    let layers = entry
        .layers
        .iter()
        .zip(&diff_ids)
        .map(|(path, diff_id)| {
            let digest = path.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}"));
            LayerBlob {
                locator: path.clone(),
                digest,
                media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                size: archive.members.get(path).map(|m| m.1),
                diff_id: diff_id.clone(),
            }
        })
        .collect();
    let name = tags(entry).first().cloned().unwrap_or_else(|| hex[..12.min(hex.len())].to_string());
    Ok(Image {
        name,
        config_digest: cfg_digest,
        config_locator: entry.config.clone(),
        manifest: None,
        chain_ids: chain_ids(&diff_ids),
        layers,
    })
}

/// Opens layer `i` of `image` as its uncompressed tar stream, the blob checked against
/// its digest when it ends. The tar is not hashed here: whoever applies it does (the
/// driver's apply computes the diff_id anyway) and checks it against the diff_id.
///
/// With `keep`, a blob that store does not hold yet is written there as it is read (and
/// kept once whole and verified), so that an unpack reads and hashes each blob once.
pub fn open_layer(
    source: &dyn BlobSource,
    image: &Image,
    i: usize,
    keep: Option<&ContentStore>,
) -> Result<Box<dyn Read + Send>> {
    open_layer_blob(source, &image.layers[i], i, keep)
}

fn open_layer_blob(
    source: &dyn BlobSource,
    layer: &LayerBlob,
    i: usize,
    keep: Option<&ContentStore>,
) -> Result<Box<dyn Read + Send>> {
    let what = format!("layer {} (blob {})", i + 1, layer.locator);
    let fail = |e: io::Error| Error::new(Cause::Other(format!("{what}: {e}")));
    check_stored_size(source, &layer.locator, layer.size).map_err(fail)?;
    let blob = source.open(&layer.locator).map_err(fail)?;
    let blob: Box<dyn Read + Send> = match (&layer.digest, keep) {
        (Some(d), Some(store)) if store.kept_size(d).is_none() => {
            Box::new(store.keeping(blob, d, layer.size, format!("blob {d}"))?)
        }
        (Some(d), _) => Box::new(VerifyingReader::new(blob, d, layer.size, format!("blob {d}"))),
        (None, _) => blob,
    };
    let (_, plain) =
        strata_archive::compress::decompress(blob).map_err(|e| Error::new(Cause::Other(format!("{what}: {e}"))))?;
    Ok(Box::new(plain))
}

/// [`open_layer`], deferred to the stream's first read when the source can be shared:
/// an image of a thousand layers then holds one decompressor at a time (per applying
/// thread), not a thousand, and no file descriptor per layer up front.
pub fn open_layer_lazily(
    source: &dyn BlobSource,
    image: &Image,
    i: usize,
    keep: Option<&ContentStore>,
) -> Result<Box<dyn Read + Send>> {
    let Some(shared) = source.shared() else { return open_layer(source, image, i, keep) };
    let layer = image.layers[i].clone();
    let keep = keep.cloned();
    Ok(Box::new(Lazy::Pending(Box::new(move || {
        open_layer_blob(shared.as_ref(), &layer, i, keep.as_ref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }))))
}

type Opener = Box<dyn FnOnce() -> io::Result<Box<dyn Read + Send>> + Send>;

enum Lazy {
    Pending(Opener),
    Open(Box<dyn Read + Send>),
    Failed,
}

impl Read for Lazy {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Lazy::Pending(_) = self {
            let Lazy::Pending(open) = std::mem::replace(self, Lazy::Failed) else { unreachable!() };
            *self = Lazy::Open(open()?);
        }
        match self {
            Lazy::Open(r) => r.read(buf),
            _ => Err(io::Error::other("the layer's stream failed to open")),
        }
    }
}

/// Writes an OCI image layout holding one image of the given layer blobs (each plain,
/// gzip or zstd; the media type follows the magic bytes), tagged `tag`. Used to make
/// test images and to hand the generated workload to containerd and podman.
pub fn write_layout<B: LayoutBlob>(dir: &Path, tag: &str, layer_blobs: &[B]) -> Result<()> {
    use std::io::Write as _;
    let io_err = |e: io::Error| Error::new(e).with_path(dir);
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io_err)?;
    let put = |data: &[u8]| -> Result<String> {
        let digest = sha256(data);
        let path = dir.join(blob_path(&digest).map_err(io_err)?);
        if !path.exists() {
            std::fs::File::create(&path).and_then(|mut f| f.write_all(data)).map_err(io_err)?;
        }
        Ok(digest)
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for blob in layer_blobs {
        // Streamed in, then read back for the diff_id: a layer is never whole in memory.
        let incoming = tempfile::NamedTempFile::new_in(dir.join("blobs/sha256")).map_err(io_err)?;
        let mut kept = Hashing::new(incoming);
        let size = blob.reader().and_then(|mut r| io::copy(&mut r, &mut kept)).map_err(io_err)?;
        let (incoming, digest, _) = kept.finish();
        let path = dir.join(blob_path(&digest).map_err(io_err)?);
        incoming.persist(&path).map_err(|e| io_err(e.error))?;
        let blob_file = io::BufReader::new(File::open(&path).map_err(io_err)?);
        let (kind, mut plain) = strata_archive::compress::decompress(blob_file).map_err(io_err)?;
        let mut h = Hashing::new(io::sink());
        io::copy(&mut plain, &mut h).map_err(io_err)?;
        diff_ids.push(h.digest());
        let media = match kind {
            strata_archive::compress::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            strata_archive::compress::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            strata_archive::compress::Compression::None => "application/vnd.oci.image.layer.v1.tar",
        };
        layers.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
    }
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| serde_json::json!({"created_by": "strata"})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config)?, "size": config.len()},
        "layers": layers,
    }))
    .expect("json");
    let mdigest = put(&manifest)?;
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = match std::fs::read(&index_path) {
        Ok(data) => serde_json::from_slice(&data)
            .map_err(|e| Error::new(Cause::Corrupt(e.to_string())).with_path(&index_path))?,
        Err(_) => serde_json::json!({"schemaVersion": 2, "manifests": []}),
    };
    let manifests = index["manifests"].as_array_mut().expect("manifests array");
    manifests.retain(|m| m["annotations"][REF_NAME] != tag);
    manifests.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": manifest.len(),
        "annotations": {REF_NAME: tag},
    }));
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).map_err(io_err)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err)?;
    Ok(())
}

/// A layer blob [`write_layout`] reads: bytes in memory (generated layers), or a file
/// on disk (a real image's layer, which the bench streams rather than holds).
pub trait LayoutBlob {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>>;
}

impl LayoutBlob for Vec<u8> {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(&self[..]))
    }
}

impl LayoutBlob for PathBuf {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(io::BufReader::new(File::open(self)?)))
    }
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
    /// The depth check agrees with a parse into `serde_json::Value` (what the content
    /// store does) on every document it accepts, and counts no bracket inside a string,
    /// on generated documents (fixed seed) of every depth around the limit.
    #[test]
    fn the_depth_check_accepts_only_what_the_store_can_read_back() {
        let mut x: u64 = 0x0dd_5eed;
        for depth in 1..=200usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Arrays and objects mixed, with strings full of brackets and escapes.
            let mut doc = String::new();
            let mut closers = Vec::new();
            for level in 0..depth {
                if (x >> (level % 64)) & 1 == 0 {
                    doc.push_str(r#"{"k\"[{": "]]}\\", "v": "#);
                    closers.push('}');
                } else {
                    doc.push_str(r#"["[[[\"{{", "#);
                    closers.push(']');
                }
            }
            doc.push_str("null");
            doc.extend(closers.iter().rev());
            let checked = super::check_depth("src", "config", doc.as_bytes());
            assert_eq!(checked.is_ok(), depth <= super::MAX_JSON_DEPTH, "depth {depth}: {doc}");
            match checked {
                Ok(()) => {
                    serde_json::from_str::<serde_json::Value>(&doc).unwrap_or_else(|e| panic!("depth {depth}: {e}"));
                }
                Err(e) => assert!(e.to_string().contains("config: JSON nested more than 64 levels"), "{e}"),
            }
        }
    }

    #[test]
    fn plainly_valid_names_are_valid_references() {
        for name in ["bench", "debian", "repo/app:tag", "registry.local/a/b_c:1.0-rc", "a.b-c/d_e:Latest"] {
            assert!(super::plainly_valid(name), "{name} takes the fast path");
        }
        // Generated names (fixed seed) over the characters that matter to the grammar.
        let alphabet = b"ab0Z._-/:@";
        let mut x: u64 = 0x5eed_0123_4567;
        let mut fast = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 12) as usize;
            let name: String = (0..len).map(|i| alphabet[((x >> (4 * i + 8)) % 10) as usize] as char).collect();
            if super::plainly_valid(&name) {
                fast += 1;
                assert!(name.parse::<oci_spec::distribution::Reference>().is_ok(), "{name:?} is no reference");
            }
        }
        assert!(fast > 1000, "the generator reaches the fast path ({fast})");
        let long = format!("{}:{}", "a".repeat(200), "t".repeat(128));
        assert!(super::plainly_valid(&long) && long.parse::<oci_spec::distribution::Reference>().is_ok());
        for refused in ["", "A", "a/", "/a", "a//b", "a..b", "a-", "a:", "a:.t", "a@sha256:00"] {
            assert!(!super::plainly_valid(refused), "{refused:?}");
        }
    }

    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn chain_ids_follow_the_spec() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let ids = chain_ids(&[d('a'), d('b')]);
        assert_eq!(ids[0], d('a'));
        let want = format!("sha256:{}", hex::encode(Sha256::digest(format!("{} {}", d('a'), d('b')).as_bytes())));
        assert_eq!(ids[1], want);
    }

    #[test]
    fn verifying_reader_catches_tampering_and_truncation() {
        let data = b"layer bytes".to_vec();
        let good = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], &good, Some(data.len() as u64), "blob".into()).read_to_end(&mut out).unwrap();
        let mut tampered = data.clone();
        tampered[0] ^= 1;
        let e = VerifyingReader::new(&tampered[..], &good, None, "blob x".into()).read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("blob x has digest"), "{e}");
        let e = VerifyingReader::new(&data[..5], &good, Some(data.len() as u64), "blob".into())
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn blob_paths_refuse_traversal() {
        assert!(blob_path("sha256:../../etc/passwd").is_err());
        assert!(blob_path("md5:abc").is_err());
        assert!(blob_path(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
