//! `strata layer which ID PATH` and `strata layer explain ID PATH`: where a path in a
//! layer's view comes from, and what a driver physically stored for it.
//!
//! Both read the layers' own folders as the driver describes them
//! ([`Driver::layer_dir`]): overlay keeps only a layer's changes, with a deletion as a
//! 0/0 character device and a directory hiding everything below as `opaque=y`; vfs
//! keeps a full copy per layer and btrfs a snapshot, where a deleted file is simply
//! absent, so there the layer's own changes come from the driver's `changes`.

use std::ffi::CString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use driver_core::sys::{self, XattrTarget};
use driver_core::{ChangeKind, Driver, Error, LayerDir, LayerDirKind, LayerInfo};
use serde::Serialize;

use crate::error::Usage;
use crate::outln;
use crate::output::short_id;

/// What one layer's own folder holds at a path, walked name by name without following
/// symbolic links.
enum Lookup {
    Found {
        disk: PathBuf,
        md: Metadata,
    },
    /// Nothing at the path; `opaque_above` is the nearest ancestor marked opaque.
    Absent {
        opaque_above: Option<PathBuf>,
    },
    /// An ancestor (`at`, relative) is not a directory: a whiteout, a file or a link.
    Blocked {
        at: PathBuf,
        disk: PathBuf,
        md: Metadata,
    },
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path has no NUL")
}

fn has_xattr(disk: &Path, name: &str) -> io::Result<bool> {
    Ok(sys::get_xattr(XattrTarget::NoFollow(&cpath(disk)), name)?.is_some())
}

fn is_opaque(disk: &Path, prefix: Option<&str>) -> io::Result<bool> {
    let Some(prefix) = prefix else { return Ok(false) };
    Ok(sys::get_xattr(XattrTarget::NoFollow(&cpath(disk)), &format!("{prefix}opaque"))?.as_deref() == Some(b"y"))
}

fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn lookup(dir: &Path, rel: &Path, opaque_prefix: Option<&str>) -> io::Result<Lookup> {
    let names: Vec<_> = rel.components().collect();
    let mut disk = dir.to_path_buf();
    let mut at = PathBuf::new();
    let mut opaque_above = None;
    for (i, name) in names.iter().enumerate() {
        disk.push(name);
        at.push(name);
        let md = match std::fs::symlink_metadata(&disk) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Absent { opaque_above }),
            Err(e) => return Err(e),
        };
        if i + 1 == names.len() {
            return Ok(Lookup::Found { disk, md });
        }
        if !md.is_dir() {
            return Ok(Lookup::Blocked { at, disk, md });
        }
        if is_opaque(&disk, opaque_prefix)? {
            opaque_above = Some(at.clone());
        }
    }
    unreachable!("rel has at least one name")
}

fn type_name(md: &Metadata) -> &'static str {
    let t = md.file_type();
    if is_whiteout(md) {
        "whiteout"
    } else if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_char_device() {
        "char-device"
    } else if t.is_block_device() {
        "block-device"
    } else if t.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

/// `/a/b` or `a/b` as `a/b`; no `..`, not the root.
fn relative(path: &str) -> Result<PathBuf, Usage> {
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(Usage::PathWithParent(path.to_string())),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(Usage::PathNotBelowRoot(path.to_string()));
    }
    Ok(rel)
}

fn slash(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// The most symbolic links one lookup follows: the kernel's MAXSYMLINKS (40), past
/// which a path lookup fails with ELOOP.
const MAX_LINKS: usize = 40;

/// A symbolic link followed on the way to the path looked up (`layer which --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Followed {
    /// Where the link is in the view.
    pub at: String,
    /// What it points to, as stored.
    pub target: String,
}

/// The node the view of `layers` (a chain, top first) shows at `rel`, whose ancestors
/// are directories in that view; `None` when the view has nothing there.
fn shown_node(driver: &dyn Driver, layers: &[LayerInfo], rel: &Path) -> Result<Option<(PathBuf, Metadata)>, Error> {
    for info in layers {
        let dir = driver.layer_dir(&info.id)?;
        let found = lookup(&dir.path, rel, prefix(&dir)).map_err(|e| Error::at(&info.id, dir.path.join(rel), e))?;
        // A full copy or a snapshot holds the whole view: its answer is the view's.
        let changes = matches!(dir.kind, LayerDirKind::Changes { .. });
        match found {
            Lookup::Found { disk, md } if !(changes && is_whiteout(&md)) => return Ok(Some((disk, md))),
            Lookup::Absent { opaque_above: None } if changes => {}
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// `rel` as the container sees it in the view of `layers` (top first): each symbolic
/// link on the way is followed, as the view shows it, and the last name is not (the
/// question is about the entry itself, as `lstat` asks). Confined to the view's root as
/// the container is: an absolute target starts again at the root and `..` stops there
/// (what `RESOLVE_IN_ROOT` does). Debian's merged /usr makes this the common case:
/// `/bin` is `usr/bin`, `/lib` is `usr/lib`. Returns the path looked up and the links
/// followed on the way.
fn resolve(
    driver: &dyn Driver,
    id: &str,
    layers: &[LayerInfo],
    rel: &Path,
) -> crate::error::Result<(PathBuf, Vec<Followed>)> {
    use std::ffi::OsString;
    // Names still to walk, the next on top.
    let mut todo: Vec<OsString> = rel.iter().rev().map(|n| n.to_os_string()).collect();
    let mut done = PathBuf::new();
    let mut followed = Vec::new();
    while let Some(name) = todo.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        if name == "." || name == "/" || name.is_empty() {
            continue;
        }
        let here = done.join(&name);
        if todo.is_empty() {
            return Ok((here, followed));
        }
        match shown_node(driver, layers, &here)? {
            Some((disk, md)) if md.file_type().is_symlink() => {
                if followed.len() == MAX_LINKS {
                    return Err(Error::at(id, slash(&here), io::Error::from_raw_os_error(libc::ELOOP)).into());
                }
                let target = std::fs::read_link(&disk).map_err(|e| Error::at(id, &disk, e))?;
                followed.push(Followed { at: slash(&here), target: target.display().to_string() });
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                todo.extend(target.iter().rev().map(|n| n.to_os_string()));
            }
            // A directory is walked into; anything else ends the walk when the
            // lookup reaches it (the view has nothing below a file).
            _ => done = here,
        }
    }
    // The last name of a path given by the user is a plain name, so this is not reached.
    Err(Usage::PathIsRoot(slash(rel)).into())
}

/// What one layer of a chain holds for the path, as `layer which --json` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct LayerEntry {
    pub id: String,
    pub writable: bool,
    /// `version` (the layer has its own copy), `deletion` (it hides the path from the
    /// layers below), or `nothing` (it does not touch the path).
    pub holds: &'static str,
    /// The version's type: file, dir, symlink, … (null unless `holds` is `version`).
    #[serde(rename = "type")]
    pub kind: Option<&'static str>,
    /// For a version: `added` or `modified` where the driver tells (vfs, btrfs), `opaque`
    /// for an overlay directory that hides the layers below; for a deletion: `whiteout`,
    /// `opaque-dir`, `absent` (a full copy without it) or `replaced` (an ancestor is no
    /// longer a directory).
    pub how: Option<&'static str>,
    /// For a deletion, the path of what hides it (the path itself or an ancestor).
    pub at: Option<String>,
    /// Whether this layer's entry is what the view of the asked layer shows.
    pub shown: bool,
}

/// `layer which --json` (docs/json.md).
#[derive(Clone, Debug, Serialize)]
pub struct Which {
    pub version: u32,
    pub layer: String,
    pub driver: String,
    pub path: String,
    /// `path` with the symbolic links on the way followed as the view resolves them
    /// (the same as `path` when there are none): what the layers were asked.
    pub looked_up: String,
    /// The links followed, in order.
    pub links: Vec<Followed>,
    /// Whether the path is in the layer's view.
    pub present: bool,
    /// The layer whose version the view shows (null when absent).
    pub provided_by: Option<String>,
    /// When `provided_by` is a writable (container) layer: whether a lower layer has the
    /// path too, so the container's copy is a copy-up (or a change made over it).
    pub copied_up: Option<bool>,
    /// On overlay, for a copied-up file: `data and metadata`, or `metadata only` when
    /// the upper file carries the metacopy xattr (the data stays below).
    pub copy: Option<&'static str>,
    /// Every layer of the chain, top first.
    pub layers: Vec<LayerEntry>,
}

fn chain(driver: &dyn Driver, id: &str) -> Result<Vec<LayerInfo>, Error> {
    let mut out = vec![driver.get(id)?];
    while let Some(p) = out.last().and_then(|l| l.parent.clone()) {
        out.push(driver.get(&p).map_err(|e| e.in_layer(id))?);
    }
    Ok(out)
}

fn prefix(dir: &LayerDir) -> Option<&str> {
    match &dir.kind {
        LayerDirKind::Changes { xattr_prefix } => Some(xattr_prefix),
        _ => None,
    }
}

/// What layer `info` alone holds for `rel`.
fn entry(driver: &dyn Driver, info: &LayerInfo, rel: &Path) -> Result<(LayerEntry, Option<PathBuf>), Error> {
    let dir = driver.layer_dir(&info.id)?;
    let io_err = |e: io::Error| Error::at(&info.id, dir.path.join(rel), e);
    let mut e = LayerEntry {
        id: info.id.clone(),
        writable: info.writable,
        holds: "nothing",
        kind: None,
        how: None,
        at: None,
        shown: false,
    };
    // The path is resolved in the view, so a layer with a link where the view has a
    // directory is one whose link a layer above replaced: a non-directory hiding what
    // the layers below hold, as a file there would.
    let found = lookup(&dir.path, rel, prefix(&dir)).map_err(io_err)?;
    match dir.kind {
        LayerDirKind::Changes { .. } => match found {
            Lookup::Found { disk, md } if is_whiteout(&md) => {
                (e.holds, e.how, e.at) = ("deletion", Some("whiteout"), Some(slash(rel)));
                let _ = disk;
            }
            Lookup::Found { disk, md } => {
                let opaque = md.is_dir() && is_opaque(&disk, prefix(&dir)).map_err(io_err)?;
                (e.holds, e.kind) = ("version", Some(type_name(&md)));
                e.how = opaque.then_some("opaque");
                return Ok((e, Some(disk)));
            }
            Lookup::Absent { opaque_above: Some(o) } => {
                (e.holds, e.how, e.at) = ("deletion", Some("opaque-dir"), Some(slash(&o)))
            }
            Lookup::Absent { opaque_above: None } => {}
            Lookup::Blocked { at, md, .. } => {
                let how = if is_whiteout(&md) { "whiteout" } else { "replaced" };
                (e.holds, e.how, e.at) = ("deletion", Some(how), Some(slash(&at)));
            }
        },
        LayerDirKind::FullCopy | LayerDirKind::Snapshot => {
            // A full tree holds every path of the view: the layer's own part is what
            // the driver's changes say (a deleted tree is listed once, at its top).
            let changes = driver.changes(&info.id)?;
            let mut ancestors: Vec<&Path> = rel.ancestors().collect();
            ancestors.pop(); // ""
            for c in changes.iter().filter(|c| ancestors.contains(&c.path.as_path())) {
                match (c.kind, c.path == rel, &found) {
                    (ChangeKind::Deleted, _, _) => {
                        (e.holds, e.how, e.at) = ("deletion", Some("absent"), Some(slash(&c.path)));
                    }
                    (_, true, Lookup::Found { disk, md }) => {
                        (e.holds, e.kind) = ("version", Some(type_name(md)));
                        e.how = Some(if c.kind == ChangeKind::Added { "added" } else { "modified" });
                        return Ok((e, Some(disk.clone())));
                    }
                    (_, false, Lookup::Blocked { at, .. }) if c.path == *at => {
                        (e.holds, e.how, e.at) = ("deletion", Some("replaced"), Some(slash(at)));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok((e, None))
}

pub fn which(driver: &dyn Driver, id: &str, path: &str) -> crate::error::Result<Which> {
    let layers = chain(driver, id)?;
    let asked = relative(path)?;
    let (rel, links) = resolve(driver, id, &layers, &asked)?;
    let mut out = Which {
        version: 1,
        layer: id.to_string(),
        driver: driver.name().to_string(),
        path: slash(&asked),
        looked_up: slash(&rel),
        links,
        present: false,
        provided_by: None,
        copied_up: None,
        copy: None,
        layers: Vec::new(),
    };
    let mut shown: Option<(usize, Option<PathBuf>)> = None;
    for info in &layers {
        let (mut e, disk) = entry(driver, info, &rel)?;
        if shown.is_none() && e.holds != "nothing" {
            e.shown = true;
            shown = Some((out.layers.len(), disk));
        }
        out.layers.push(e);
    }
    if let Some((i, disk)) = shown {
        let top = &out.layers[i];
        if top.holds == "version" {
            out.present = true;
            out.provided_by = Some(top.id.clone());
            if top.writable {
                // What the layers below show: the next layer that touches the path.
                let below = out.layers[i + 1..].iter().find(|l| l.holds != "nothing");
                let copied = below.is_some_and(|l| l.holds == "version");
                out.copied_up = Some(copied);
                let dir = driver.layer_dir(&top.id)?;
                if let (true, LayerDirKind::Changes { xattr_prefix }, Some(disk)) = (copied, &dir.kind, disk) {
                    let meta_only = top.kind == Some("file")
                        && has_xattr(&disk, &format!("{xattr_prefix}metacopy")).map_err(|e| Error::at(id, &disk, e))?;
                    out.copy = Some(if meta_only { "metadata only" } else { "data and metadata" });
                }
            }
        }
    }
    Ok(out)
}

pub fn print_which(w: &Which) -> Result<(), crate::error::Error> {
    if !w.links.is_empty() {
        let via: Vec<String> = w.links.iter().map(|l| format!("{} -> {}", l.at, l.target)).collect();
        outln!("{} in {}: looked up as {} (through {})", w.path, w.layer, w.looked_up, via.join(", "))?;
    }
    match (&w.provided_by, w.copied_up) {
        (Some(p), Some(true)) => {
            let how = match (w.driver.as_str(), w.copy) {
                ("overlay", Some(c)) => format!("copied up ({c})"),
                ("btrfs", _) => "changed in the container's snapshot (btrfs wrote only the changed extents)".into(),
                _ => "changed in the container's full copy".into(),
            };
            outln!(
                "{} in {}: from the container layer {}, {how}; a lower layer has it too",
                w.path,
                w.layer,
                short_id(p)
            )?
        }
        (Some(p), Some(false)) => {
            outln!("{} in {}: from the container layer {} (new there)", w.path, w.layer, short_id(p))?
        }
        (Some(p), None) => outln!("{} in {}: from layer {}", w.path, w.layer, short_id(p))?,
        (None, _) => {
            let why = w.layers.iter().find(|l| l.shown).map(|l| {
                format!(
                    "deleted by layer {} ({} at {})",
                    short_id(&l.id),
                    l.how.unwrap_or(""),
                    l.at.as_deref().unwrap_or("")
                )
            });
            outln!("{} in {}: not in the view, {}", w.path, w.layer, why.unwrap_or_else(|| "no layer has it".into()))?
        }
    }
    outln!("{:<20} {:<10} {:<9} WHAT", "LAYER", "KIND", "SHOWN")?;
    for l in &w.layers {
        let what = match l.holds {
            "version" => format!("{} {}", l.kind.unwrap_or(""), l.how.map(|h| format!("({h})")).unwrap_or_default()),
            "deletion" => format!("deletion: {} at {}", l.how.unwrap_or(""), l.at.as_deref().unwrap_or("")),
            _ => "-".into(),
        };
        let kind = if l.writable { "container" } else { "image" };
        let shown = if l.shown { "yes" } else { "" };
        outln!("{:<20} {kind:<10} {shown:<9} {}", short_id(&l.id), what.trim_end())?;
    }
    Ok(())
}

/// `layer explain --json` (docs/json.md).
#[derive(Clone, Debug, Serialize)]
pub struct Explain {
    pub version: u32,
    pub layer: String,
    pub driver: String,
    pub path: String,
    /// `path` with the symbolic links on the way followed as the layer's view resolves
    /// them (as `layer which` says).
    pub looked_up: String,
    /// The layer's own folder and how it stores files: `changes` (overlay), `full-copy`
    /// (vfs), `snapshot` (btrfs).
    pub layer_dir: PathBuf,
    pub layer_kind: &'static str,
    /// What is stored for the path: `whiteout`, `opaque-dir`, `file`, `dir`, `symlink`,
    /// … (a node of that type), or `absent`.
    pub stored: &'static str,
    /// The node on disk (the path itself, or the ancestor whiteout/opaque directory
    /// that stands for it); null when nothing is stored.
    pub disk_path: Option<PathBuf>,
    /// st_blocks × 512 of that node.
    pub bytes: Option<u64>,
    /// btrfs: data bytes of the file shared with other snapshots and exclusive to this
    /// one (FIEMAP's shared flag); null elsewhere.
    pub shared_bytes: Option<u64>,
    pub exclusive_bytes: Option<u64>,
    /// Whether the parent layer's view has the path.
    pub parent_has: bool,
    /// The same in one sentence.
    pub meaning: String,
}

pub fn explain(driver: &dyn Driver, id: &str, path: &str) -> crate::error::Result<Explain> {
    let asked = relative(path)?;
    let layers = chain(driver, id)?;
    let info = &layers[0];
    // The links on the way, as the layer's own view resolves them.
    let (rel, _) = resolve(driver, id, &layers, &asked)?;
    let dir = driver.layer_dir(id)?;
    let io_err = |e: io::Error| Error::at(id, dir.path.join(&rel), e);
    let parent_has = match &info.parent {
        Some(p) => which(driver, p, &slash(&rel))?.present,
        None => false,
    };
    let layer_kind = match dir.kind {
        LayerDirKind::Changes { .. } => "changes",
        LayerDirKind::FullCopy => "full-copy",
        LayerDirKind::Snapshot => "snapshot",
    };
    let mut out = Explain {
        version: 1,
        layer: id.to_string(),
        driver: driver.name().to_string(),
        path: slash(&asked),
        looked_up: slash(&rel),
        layer_dir: dir.path.clone(),
        layer_kind,
        stored: "absent",
        disk_path: None,
        bytes: None,
        shared_bytes: None,
        exclusive_bytes: None,
        parent_has,
        meaning: String::new(),
    };
    let found = lookup(&dir.path, &rel, prefix(&dir)).map_err(io_err)?;
    let below = if parent_has { "the parent's view has it" } else { "the parent's view does not have it either" };
    let p = slash(&rel);
    match found {
        Lookup::Found { disk, md } => {
            out.bytes = Some(md.blocks() * 512);
            let opaque = md.is_dir() && is_opaque(&disk, prefix(&dir)).map_err(io_err)?;
            out.stored = if opaque { "opaque-dir" } else { type_name(&md) };
            if matches!(dir.kind, LayerDirKind::Snapshot) && md.is_file() {
                let f = std::fs::File::open(&disk).map_err(io_err)?;
                let e = sys::extent_bytes(std::os::fd::AsFd::as_fd(&f)).map_err(io_err)?;
                (out.shared_bytes, out.exclusive_bytes) = (Some(e.shared), Some(e.total - e.shared));
            }
            out.meaning = match (&dir.kind, out.stored) {
                (LayerDirKind::Changes { .. }, "whiteout") => {
                    format!("overlay stores the deletion of {p} as a whiteout: a 0/0 character device; {below}")
                }
                (LayerDirKind::Changes { .. }, "opaque-dir") => format!(
                    "overlay stores {p} as an opaque directory (xattr opaque=y): nothing below it in lower layers shows"
                ),
                (LayerDirKind::Changes { xattr_prefix }, t) => {
                    let meta_only = t == "file"
                        && has_xattr(&disk, &format!("{xattr_prefix}metacopy")).map_err(io_err)?;
                    let what = if meta_only { "only its metadata (metacopy; the data stays below)" } else { "data and metadata" };
                    if parent_has {
                        format!("overlay stores its own copy of {p} ({t}, {what}); it covers the parent's version")
                    } else {
                        format!("overlay stores {p} ({t}), new in this layer")
                    }
                }
                (LayerDirKind::FullCopy, t) => {
                    format!("vfs stores a full copy of every file; {p} ({t}) is in this layer's copy; {below}")
                }
                (LayerDirKind::Snapshot, t) => match (out.shared_bytes, out.exclusive_bytes) {
                    (Some(s), Some(x)) => format!(
                        "btrfs stores {p} ({t}) in this layer's snapshot: {s} bytes of extents shared with other snapshots, {x} bytes its own; {below}"
                    ),
                    _ => format!("btrfs stores {p} ({t}) in this layer's snapshot; {below}"),
                },
            };
            out.disk_path = Some(disk);
        }
        Lookup::Blocked { at, disk, md } if is_whiteout(&md) => {
            out.stored = "whiteout";
            out.bytes = Some(md.blocks() * 512);
            out.meaning = format!(
                "overlay stores the deletion of {} (which held {p}) as a whiteout: a 0/0 character device",
                slash(&at)
            );
            out.disk_path = Some(disk);
        }
        Lookup::Blocked { at, disk, md } => {
            out.stored = "absent";
            out.meaning = format!("{} is a {} in this layer, so nothing can be below it", slash(&at), type_name(&md));
            let _ = disk;
        }
        Lookup::Absent { opaque_above: Some(o) } => {
            let disk = dir.path.join(&o);
            out.stored = "opaque-dir";
            out.bytes = Some(std::fs::symlink_metadata(&disk).map_err(io_err)?.blocks() * 512);
            out.meaning = format!(
                "overlay stores nothing for {p}: the opaque directory {} hides whatever lower layers hold there",
                slash(&o)
            );
            out.disk_path = Some(disk);
        }
        Lookup::Absent { opaque_above: None } => {
            out.meaning = match (&dir.kind, parent_has) {
                (LayerDirKind::Changes { .. }, true) => {
                    format!("overlay stores nothing for {p} in this layer: it does not change it, the view shows a lower layer's")
                }
                (LayerDirKind::Changes { .. }, false) => format!("overlay stores nothing for {p}, and no lower layer has it"),
                (LayerDirKind::FullCopy, true) => format!(
                    "the layer is a full copy and {p} is simply not there: vfs stores a deletion as absence (the parent's copy still has it)"
                ),
                (LayerDirKind::Snapshot, true) => format!(
                    "{p} is absent from this layer's snapshot, which shares its other extents with the parent: btrfs stores a deletion as absence"
                ),
                (_, false) => format!("{p} is in neither this layer nor its parent"),
            };
        }
    }
    Ok(out)
}

pub fn print_explain(e: &Explain) -> Result<(), crate::error::Error> {
    outln!("layer {} ({}, {}): {}", short_id(&e.layer), e.driver, e.layer_kind, e.layer_dir.display())?;
    let path =
        if e.looked_up == e.path { e.path.clone() } else { format!("{} (looked up as {})", e.path, e.looked_up) };
    match &e.disk_path {
        Some(d) => outln!("{path}: {} at {}, {} bytes on disk", e.stored, d.display(), e.bytes.unwrap_or(0))?,
        None => outln!("{path}: {}", e.stored)?,
    }
    outln!("{}", e.meaning)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths `which` and `explain` refuse are usage errors (exit 2), each its own.
    #[test]
    fn refused_paths_are_usage_errors() {
        assert!(matches!(relative("../x"), Err(Usage::PathWithParent(p)) if p == "../x"));
        assert!(matches!(relative("/a/../b"), Err(Usage::PathWithParent(_))));
        assert!(matches!(relative("/"), Err(Usage::PathNotBelowRoot(p)) if p == "/"));
        assert!(matches!(relative("."), Err(Usage::PathNotBelowRoot(_))));
        assert_eq!(relative("/usr/./bin/sh").unwrap(), Path::new("usr/bin/sh"));
        let e = crate::error::Error::from(relative("..").unwrap_err());
        assert_eq!(e.exit_code(), crate::error::USAGE);
    }
}
