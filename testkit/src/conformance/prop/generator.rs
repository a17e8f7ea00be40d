//! The generator: a base layer and a script of changes, made against a model of the
//! view (see [`super`] for what it leaves out and why).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{Op, Script};
use crate::conformance::TarBuilder;
use strata_archive::tarbuild::EntryMeta;

#[derive(Clone, Debug, PartialEq)]
enum K {
    Dir,
    File { size: u64 },
    Symlink,
    Fifo,
}

#[derive(Clone, Debug)]
struct M {
    kind: K,
    ino: u64,
    xattrs: BTreeSet<String>,
}

/// The view as the generator sees it.
struct Model {
    nodes: BTreeMap<PathBuf, M>,
    /// Inodes that are still the image's (no change has copied them up yet).
    lower: BTreeSet<u64>,
    /// Directories as the image had them (overlayfs gives EXDEV when renaming them).
    lower_dirs: BTreeSet<u64>,
    /// Base files: content and mtime, for splits and joins with equal content.
    base_content: BTreeMap<u64, (Vec<u8>, i64)>,
    /// Nested btrfs subvolumes (by inode): no link or rename crosses their border.
    subvols: BTreeSet<u64>,
    next_ino: u64,
}

const ODD: &[&str] = &[
    "with space",
    "ünïcödé",
    "-dash",
    "tab\tname",
    "new\nline",
    ".hidden",
    "..dots",
    "#hash%",
    "back\\slash",
    "a=b,c",
];
const XATTRS: &[&str] = &["user.a", "user.b", "user.mime_type", "trusted.t"];
const UIDS: &[u32] = &[0, 1, 1000, 65534, 100000];
const MODES: &[u32] = &[0o644, 0o600, 0o755, 0o640, 0o4755, 0o2755, 0o1777, 0o444, 0o700];

fn bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let n = match rng.u8(0..10) {
        0 => 0,
        1..=6 => rng.usize(1..200),
        7 | 8 => rng.usize(200..max.max(201)),
        _ => rng.usize(max.max(201)..(max * 4).max(202)),
    };
    // Compressible runs and random bytes, so holes and equal blocks both occur.
    let mut v = vec![0u8; n];
    if rng.bool() {
        rng.fill(&mut v);
    } else {
        let b = rng.u8(..);
        v.iter_mut().for_each(|x| *x = b);
    }
    v
}

impl Model {
    fn names_of(&self, ino: u64) -> Vec<PathBuf> {
        self.nodes.iter().filter(|(_, m)| m.ino == ino && m.kind != K::Dir).map(|(p, _)| p.clone()).collect()
    }
    /// An image inode with several names: a change that copies it up splits it on overlay.
    fn pinned(&self, ino: u64) -> bool {
        self.lower.contains(&ino) && self.names_of(ino).len() > 1
    }
    fn pick(&self, rng: &mut fastrand::Rng, f: impl Fn(&Path, &M) -> bool) -> Option<PathBuf> {
        let c: Vec<&PathBuf> = self.nodes.iter().filter(|(p, m)| f(p, m)).map(|(p, _)| p).collect();
        if c.is_empty() {
            None
        } else {
            Some(c[rng.usize(..c.len())].clone())
        }
    }
    fn dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.nodes.iter().filter(|(_, m)| m.kind == K::Dir).map(|(p, _)| p.clone()).collect();
        v.push(PathBuf::new());
        v
    }
    /// A name that does not exist yet, in an existing directory, short enough to stay
    /// under the driver roots' PATH_MAX.
    fn new_path(&self, rng: &mut fastrand::Rng) -> PathBuf {
        let dirs = self.dirs();
        for _ in 0..20 {
            let d = &dirs[rng.usize(..dirs.len())];
            let name = if rng.u8(0..8) == 0 {
                ODD[rng.usize(..ODD.len())].to_string()
            } else {
                format!("n{}", rng.u16(0..500))
            };
            let p = d.join(name);
            if !self.nodes.contains_key(&p) && p.as_os_str().len() < 3700 {
                return p;
            }
        }
        PathBuf::from(format!("top{}", rng.u64(..)))
    }
    fn new_ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }
    fn add(&mut self, p: PathBuf, kind: K) -> u64 {
        let ino = self.new_ino();
        self.nodes.insert(p, M { kind, ino, xattrs: BTreeSet::new() });
        ino
    }
    fn below(&self, dir: &Path) -> Vec<PathBuf> {
        self.nodes.keys().filter(|p| p.starts_with(dir) && *p != dir).cloned().collect()
    }
    fn remove(&mut self, p: &Path) {
        for c in self.below(p) {
            self.nodes.remove(&c);
        }
        self.nodes.remove(p);
    }
    /// A change to the inode (data, metadata): overlayfs copies it up.
    fn touch(&mut self, p: &Path) {
        if let Some(m) = self.nodes.get(p) {
            if m.kind != K::Dir {
                self.lower.remove(&m.ino);
            }
        }
    }
    /// The nearest subvolume strictly above `p` (btrfs gives EXDEV for a link or
    /// rename between two).
    fn subvol_of(&self, p: &Path) -> Option<u64> {
        p.ancestors().skip(1).find_map(|a| self.nodes.get(a).map(|n| n.ino).filter(|i| self.subvols.contains(i)))
    }
    fn same_subvol(&self, a: &Path, b: &Path) -> bool {
        self.subvol_of(a) == self.subvol_of(b)
    }
    fn holds_subvol(&self, p: &Path) -> bool {
        self.below(p)
            .iter()
            .chain([p.to_path_buf()].iter())
            .any(|q| self.nodes.get(q).is_some_and(|n| self.subvols.contains(&n.ino)))
    }
    fn modifiable(&self, p: &Path, m: &M) -> bool {
        !p.as_os_str().is_empty() && !self.pinned(m.ino)
    }
    /// Whether every name of every inode below `dir` is below `dir` too.
    fn self_contained(&self, dir: &Path) -> bool {
        self.below(dir).iter().all(|p| {
            let m = &self.nodes[p];
            m.kind == K::Dir || self.names_of(m.ino).iter().all(|q| q.starts_with(dir))
        })
    }
}

fn gen_base(rng: &mut fastrand::Rng) -> (Vec<u8>, Model) {
    let mut m = Model {
        nodes: BTreeMap::new(),
        lower: BTreeSet::new(),
        lower_dirs: BTreeSet::new(),
        base_content: BTreeMap::new(),
        subvols: BTreeSet::new(),
        next_ino: 0,
    };
    let mut t = TarBuilder::new();
    let meta = |rng: &mut fastrand::Rng, dir: bool, fifo: bool| EntryMeta {
        mode: if dir { [0o755, 0o700, 0o1777, 0o750][rng.usize(..4)] } else { MODES[rng.usize(..MODES.len())] },
        uid: UIDS[rng.usize(..UIDS.len())].into(),
        gid: UIDS[rng.usize(..UIDS.len())].into(),
        mtime: 1_500_000_000 + rng.u64(..100_000_000),
        // Fifos take no user.* xattrs (EPERM).
        xattrs: if !fifo && rng.u8(0..4) == 0 { vec![("user.a".into(), xattr_value(rng))] } else { Vec::new() },
    };
    let mut dirs: Vec<PathBuf> = vec![PathBuf::new()];
    for i in 0..rng.usize(3..9) {
        let parent = dirs[rng.usize(..dirs.len())].clone();
        let name = if rng.u8(0..5) == 0 { ODD[rng.usize(..ODD.len())].to_string() } else { format!("d{i}") };
        let p = parent.join(name);
        if m.nodes.contains_key(&p) {
            continue;
        }
        let md = meta(rng, true, false);
        let x = md.xattrs.iter().map(|(n, _)| n.clone()).collect();
        t.dir_with(p.to_str().unwrap(), md);
        let ino = m.add(p.clone(), K::Dir);
        m.nodes.get_mut(&p).unwrap().xattrs = x;
        m.lower_dirs.insert(ino);
        dirs.push(p);
    }
    // A chain of directories whose paths come near PATH_MAX (less the driver roots).
    if rng.u8(0..3) == 0 {
        let comp = "p".repeat(rng.usize(150..250));
        let mut p = PathBuf::from("deep");
        t.dir("deep");
        let ino = m.add(p.clone(), K::Dir);
        m.lower_dirs.insert(ino);
        while p.as_os_str().len() + comp.len() < 3500 {
            p.push(&comp);
            t.dir(p.to_str().unwrap());
            let ino = m.add(p.clone(), K::Dir);
            m.lower_dirs.insert(ino);
        }
        dirs.push(p);
    }
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    for i in 0..rng.usize(4..24) {
        let parent = dirs[rng.usize(..dirs.len())].clone();
        let p = parent.join(format!("f{i}"));
        let r = rng.u8(0..10);
        if r < 6 || files.is_empty() {
            let data = bytes(rng, 6000);
            let md = meta(rng, false, false);
            let (mt, x) = (md.mtime as i64, md.xattrs.iter().map(|(n, _)| n.clone()).collect());
            t.file_with(p.to_str().unwrap(), &data, md.clone());
            let ino = m.add(p.clone(), K::File { size: data.len() as u64 });
            m.nodes.get_mut(&p).unwrap().xattrs = x;
            m.lower.insert(ino);
            m.base_content.insert(ino, (data.clone(), mt));
            files.push((p.clone(), ino));
            // Sometimes a twin: equal content and times, a separate inode (to join).
            if rng.u8(0..4) == 0 {
                let q = parent.join(format!("f{i}twin"));
                let md = EntryMeta { xattrs: Vec::new(), ..md };
                t.file_with(q.to_str().unwrap(), &data, md);
                let ino = m.add(q.clone(), K::File { size: data.len() as u64 });
                m.lower.insert(ino);
                m.base_content.insert(ino, (data, mt));
                files.push((q, ino));
            }
        } else if r < 8 {
            // Another name of an earlier file.
            let (target, ino) = files[rng.usize(..files.len())].clone();
            t.hardlink(p.to_str().unwrap(), target.to_str().unwrap());
            let md = m.nodes[&target].clone();
            m.nodes.insert(p, M { ino, ..md });
        } else if r < 9 {
            let target = format!("../x{}", rng.u8(..));
            t.symlink(p.to_str().unwrap(), &target);
            m.add(p, K::Symlink);
        } else {
            t.device(p.to_str().unwrap(), tar::EntryType::Fifo, 0, 0, meta(rng, false, true));
            m.add(p, K::Fifo);
        }
    }
    // Everything from the tar is the image's.
    let all: Vec<u64> = m.nodes.values().filter(|n| n.kind != K::Dir).map(|n| n.ino).collect();
    m.lower.extend(all);
    (t.build(), m)
}

/// A binary xattr value without a newline byte: the tar crate (0.4.46) splits PAX
/// records at newlines, so a value holding 0x0a cannot be applied ("malformed pax
/// extension"); a known limit of the apply, not of the diff.
fn xattr_value(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut v = bytes(rng, 60);
    v.iter_mut().filter(|b| **b == b'\n').for_each(|b| *b = b'n');
    v
}

fn time(rng: &mut fastrand::Rng) -> (i64, i64) {
    let secs = 1_000_000_000 + rng.i64(0..800_000_000);
    // Whole seconds now and then: the diff then compares content.
    let nsecs = if rng.bool() { 0 } else { rng.i64(1..1_000_000_000) };
    (secs, nsecs)
}

/// Generates the script for `seed`.
pub fn generate(seed: u64) -> Script {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (base, mut m) = gen_base(&mut rng);
    let mut ops = Vec::new();
    let n = rng.usize(1..24);
    for _ in 0..n {
        gen_op(&mut rng, &mut m, &mut ops);
    }
    // A few scripts end with something no layer can carry: every driver must refuse.
    let mut refused = None;
    if rng.u8(0..25) == 0 {
        if rng.bool() {
            let d = m.dirs();
            let p = d[rng.usize(..d.len())].join(if rng.bool() { ".wh.x" } else { ".wh..wh..opq" });
            if !m.nodes.contains_key(&p) {
                ops.push(Op::Create { path: p.clone(), data: b"mine".to_vec(), mode: 0o644 });
                refused = Some(p);
            }
        } else if let Some(p) = m.pick(&mut rng, |p, x| {
            // One name only, so that the error names this path.
            matches!(x.kind, K::File { .. } | K::Dir) && m.modifiable(p, x) && m.names_of(x.ino).len() <= 1
        }) {
            let name = if rng.bool() { "user.overlay.mine" } else { "trusted.overlay.mine" };
            ops.push(Op::SetXattr { path: p.clone(), name: name.into(), value: b"v".to_vec() });
            refused = Some(p);
        }
    }
    Script { seed, base, ops, refused }
}

fn file_size(m: &Model, p: &Path) -> u64 {
    match m.nodes[p].kind {
        K::File { size } => size,
        _ => 0,
    }
}

fn set_size(m: &mut Model, p: &Path, size: u64) {
    let ino = m.nodes[p].ino;
    for n in m.nodes.values_mut().filter(|n| n.ino == ino) {
        n.kind = K::File { size };
    }
}

fn gen_op(rng: &mut fastrand::Rng, m: &mut Model, ops: &mut Vec<Op>) {
    let file = |m: &Model, p: &Path, x: &M| matches!(x.kind, K::File { .. }) && m.modifiable(p, x);
    match rng.u8(0..27) {
        0 | 1 => {
            if let Some(p) = m.pick(rng, |p, x| file(m, p, x)) {
                let size = file_size(m, &p);
                let off = rng.u64(..=size);
                let data = bytes(rng, 3000);
                let end = off + data.len() as u64;
                m.touch(&p);
                set_size(m, &p, size.max(end));
                ops.push(Op::Write { path: p, off, data });
            }
        }
        2 => {
            if let Some(p) = m.pick(rng, |p, x| file(m, p, x)) {
                let data = bytes(rng, 3000);
                m.touch(&p);
                set_size(m, &p, file_size(m, &p) + data.len() as u64);
                ops.push(Op::Append { path: p, data });
            }
        }
        3 => {
            if let Some(p) = m.pick(rng, |p, x| file(m, p, x) && file_size(m, p) > 0) {
                let size = file_size(m, &p);
                let off = rng.u64(..size);
                let len = rng.u64(1..=(size - off).min(5000));
                let mut data = vec![0u8; len as usize];
                rng.fill(&mut data);
                m.touch(&p);
                ops.push(Op::Mmap { path: p, off, data });
            }
        }
        4 => {
            if let Some(p) = m.pick(rng, |p, x| file(m, p, x)) {
                let size = file_size(m, &p);
                let len = if rng.bool() { rng.u64(..=size) } else { size + rng.u64(1..100_000) };
                m.touch(&p);
                set_size(m, &p, len);
                ops.push(Op::Truncate { path: p, len });
            }
        }
        5 => {
            if let Some(p) = m.pick(rng, |p, x| file(m, p, x) && file_size(m, p) > 0) {
                let size = file_size(m, &p);
                let off = rng.u64(..size);
                let len = rng.u64(1..=size - off);
                m.touch(&p);
                ops.push(Op::PunchHole { path: p, off, len });
            }
        }
        6 => {
            if let Some(p) = m.pick(rng, |p, x| matches!(x.kind, K::File { .. } | K::Dir) && m.modifiable(p, x)) {
                m.touch(&p);
                ops.push(Op::Chmod { path: p, mode: MODES[rng.usize(..MODES.len())] });
            }
        }
        7 => {
            if let Some(p) = m.pick(rng, |p, x| m.modifiable(p, x)) {
                m.touch(&p);
                let (uid, gid) = (UIDS[rng.usize(..UIDS.len())], UIDS[rng.usize(..UIDS.len())]);
                ops.push(Op::Chown { path: p, uid, gid });
            }
        }
        8 | 9 => {
            if let Some(p) = m.pick(rng, |p, x| x.kind != K::Symlink && m.modifiable(p, x)) {
                m.touch(&p);
                let (secs, nsecs) = time(rng);
                ops.push(Op::Utime { path: p, secs, nsecs });
            }
        }
        10 => {
            if let Some(p) = m.pick(rng, |p, x| matches!(x.kind, K::File { .. } | K::Dir) && m.modifiable(p, x)) {
                let name = XATTRS[rng.usize(..XATTRS.len())].to_string();
                m.touch(&p);
                let ino = m.nodes[&p].ino;
                for n in m.nodes.values_mut().filter(|n| n.ino == ino) {
                    n.xattrs.insert(name.clone());
                }
                ops.push(Op::SetXattr { path: p, name, value: xattr_value(rng) });
            }
        }
        11 => {
            if let Some(p) = m.pick(rng, |p, x| !x.xattrs.is_empty() && m.modifiable(p, x)) {
                let name = m.nodes[&p].xattrs.iter().next().unwrap().clone();
                m.touch(&p);
                let ino = m.nodes[&p].ino;
                for n in m.nodes.values_mut().filter(|n| n.ino == ino) {
                    n.xattrs.remove(&name);
                }
                ops.push(Op::RemoveXattr { path: p, name });
            }
        }
        12 | 13 => {
            // Rename a non-directory to a new name or over another non-directory.
            if let Some(from) = m.pick(rng, |p, x| x.kind != K::Dir && m.modifiable(p, x)) {
                let over = m.pick(rng, |p, x| {
                    x.kind != K::Dir && *p != from && m.modifiable(p, x) && x.ino != m.nodes[&from].ino
                });
                let to = match over {
                    Some(o) if rng.bool() => o,
                    _ => m.new_path(rng),
                };
                if !m.same_subvol(&from, &to) {
                    return;
                }
                m.touch(&from);
                m.nodes.remove(&to);
                let node = m.nodes.remove(&from).unwrap();
                m.nodes.insert(to.clone(), node);
                ops.push(Op::Rename { from, to });
            }
        }
        14 => {
            // Rename a directory (the image's give EXDEV on overlay: copied, as mv does).
            if let Some(from) = m.pick(rng, |p, x| x.kind == K::Dir && m.self_contained(p)) {
                let to = m.new_path(rng);
                if to.starts_with(&from)
                    || to.as_os_str().len() + longest_below(m, &from) > 3700
                    || !m.same_subvol(&from, &to)
                {
                    return;
                }
                let lower = m.lower_dirs.contains(&m.nodes[&from].ino);
                for p in m.below(&from).into_iter().chain([from.clone()]) {
                    let mut node = m.nodes.remove(&p).unwrap();
                    if lower {
                        // Copied: new inodes (links inside stay links).
                        m.lower.remove(&node.ino);
                        m.lower_dirs.remove(&node.ino);
                        if node.kind == K::Dir {
                            node.ino = m.new_ino();
                        }
                    }
                    m.nodes.insert(moved_to(&to, &from, &p), node);
                }
                ops.push(Op::Rename { from, to });
            }
        }
        15 => {
            // Swap two non-directories, or two directories the container made.
            let a = m.pick(rng, |p, x| {
                m.modifiable(p, x) && (x.kind != K::Dir || !m.lower_dirs.contains(&x.ino)) && m.self_contained(p)
            });
            if let Some(a) = a {
                let ka = m.nodes[&a].kind == K::Dir;
                let b = m.pick(rng, |p, x| {
                    *p != a
                        && !p.starts_with(&a)
                        && !a.starts_with(p)
                        && m.modifiable(p, x)
                        && (x.kind == K::Dir) == ka
                        && (x.kind != K::Dir || !m.lower_dirs.contains(&x.ino))
                        && m.self_contained(p)
                });
                if let Some(b) = b.filter(|b| m.same_subvol(&a, b) && !m.holds_subvol(&a) && !m.holds_subvol(b)) {
                    m.touch(&a);
                    m.touch(&b);
                    let (ba, bb) = (m.below(&a), m.below(&b));
                    let mut moved = Vec::new();
                    for p in ba.into_iter().chain([a.clone()]) {
                        moved.push((moved_to(&b, &a, &p), m.nodes.remove(&p).unwrap()));
                    }
                    for p in bb.into_iter().chain([b.clone()]) {
                        moved.push((moved_to(&a, &b, &p), m.nodes.remove(&p).unwrap()));
                    }
                    m.nodes.extend(moved);
                    ops.push(Op::Exchange { a, b });
                }
            }
        }
        16 => {
            // Another name for a file.
            if let Some(from) = m.pick(rng, |p, x| file(m, p, x)) {
                let to = m.new_path(rng);
                if !m.same_subvol(&from, &to) {
                    return;
                }
                m.touch(&from);
                let node = m.nodes[&from].clone();
                m.nodes.insert(to.clone(), node);
                ops.push(Op::Link { from, to });
            }
        }
        17 => {
            if let Some(p) = m.pick(rng, |_, x| x.kind != K::Dir) {
                m.remove(&p);
                ops.push(Op::Unlink { path: p });
            }
        }
        18 => {
            // Split a hardlinked pair: one name deleted and made again, equal content and mtime.
            let groups: Vec<(u64, Vec<PathBuf>)> = m
                .base_content
                .keys()
                .map(|i| (*i, m.names_of(*i)))
                .filter(|(i, n)| n.len() > 1 && m.lower.contains(i))
                .collect();
            if groups.is_empty() {
                return;
            }
            let (ino, names) = groups[rng.usize(..groups.len())].clone();
            let (data, mtime) = m.base_content[&ino].clone();
            let p = names[rng.usize(..names.len())].clone();
            let mode = 0o644;
            m.nodes.remove(&p);
            m.add(p.clone(), K::File { size: data.len() as u64 });
            ops.push(Op::Unlink { path: p.clone() });
            ops.push(Op::Create { path: p.clone(), data, mode });
            ops.push(Op::Chmod { path: p.clone(), mode: 0o644 });
            ops.push(Op::Utime { path: p, secs: mtime, nsecs: 0 });
        }
        19 => {
            // Join two image files of equal content: one name becomes a link to the other.
            let twins: Vec<(PathBuf, PathBuf)> = m
                .nodes
                .iter()
                .filter(|(p, x)| {
                    p.to_string_lossy().ends_with("twin")
                        && m.lower.contains(&x.ino)
                        && matches!(x.kind, K::File { .. })
                })
                .filter_map(|(p, _)| {
                    let orig = PathBuf::from(p.to_string_lossy().trim_end_matches("twin").to_string());
                    m.nodes.get(&orig).filter(|o| file(m, &orig, o)).map(|_| (orig, p.clone()))
                })
                .collect();
            if twins.is_empty() {
                return;
            }
            let (orig, twin) = twins[rng.usize(..twins.len())].clone();
            m.touch(&orig);
            m.nodes.remove(&twin);
            let node = m.nodes[&orig].clone();
            m.nodes.insert(twin.clone(), node);
            ops.push(Op::Unlink { path: twin.clone() });
            ops.push(Op::Link { from: orig, to: twin });
        }
        20 => {
            // Delete a tree and make it again with some of the same names.
            if let Some(d) = m.pick(rng, |p, x| x.kind == K::Dir && !p.as_os_str().is_empty()) {
                let old: Vec<PathBuf> = m.below(&d);
                m.remove(&d);
                ops.push(Op::RemoveTree { path: d.clone() });
                m.add(d.clone(), K::Dir);
                ops.push(Op::Mkdir { path: d.clone(), mode: 0o755 });
                for p in old {
                    let parent_is_dir = m.nodes.get(p.parent().unwrap()).is_some_and(|n| n.kind == K::Dir);
                    if rng.u8(0..3) != 0 || !parent_is_dir {
                        continue;
                    }
                    if rng.bool() {
                        m.add(p.clone(), K::Dir);
                        ops.push(Op::Mkdir { path: p, mode: 0o755 });
                    } else {
                        let data = bytes(rng, 2000);
                        m.add(p.clone(), K::File { size: data.len() as u64 });
                        ops.push(Op::Create { path: p, data, mode: 0o644 });
                    }
                }
            }
        }
        21 => {
            let p = m.new_path(rng);
            m.add(p.clone(), K::Dir);
            ops.push(Op::Mkdir { path: p, mode: [0o755, 0o700, 0o1777][rng.usize(..3)] });
        }
        22 => {
            // A new file, or an existing one written over (O_TRUNC).
            let p = match m.pick(rng, |p, x| file(m, p, x)) {
                Some(p) if rng.bool() => p,
                _ => m.new_path(rng),
            };
            let data = bytes(rng, 4000);
            if m.nodes.contains_key(&p) {
                m.touch(&p);
                set_size(m, &p, data.len() as u64);
            } else {
                m.add(p.clone(), K::File { size: data.len() as u64 });
            }
            ops.push(Op::Create { path: p, data, mode: MODES[rng.usize(..MODES.len())] });
        }
        23 => {
            // A new symlink, or one retargeted.
            let p = match m.pick(rng, |_, x| x.kind == K::Symlink) {
                Some(p) if rng.bool() => {
                    m.remove(&p);
                    ops.push(Op::Unlink { path: p.clone() });
                    p
                }
                _ => m.new_path(rng),
            };
            m.add(p.clone(), K::Symlink);
            ops.push(Op::Symlink { path: p, target: format!("t{}/../x", rng.u16(..)) });
        }
        24 => {
            let p = m.new_path(rng);
            m.add(p.clone(), K::Fifo);
            ops.push(Op::Mkfifo { path: p });
        }
        25 => {
            let dirs = m.dirs();
            let p = dirs[rng.usize(..dirs.len())].join(format!("sv{}", rng.u16(..)));
            if m.nodes.contains_key(&p) || p.as_os_str().len() > 3600 {
                return;
            }
            let ino = m.add(p.clone(), K::Dir);
            m.subvols.insert(ino);
            ops.push(Op::Subvolume { path: p });
        }
        _ => {
            // A type change: a file becomes a directory, or a directory a file.
            if let Some(p) = m.pick(rng, |p, x| !p.as_os_str().is_empty() && m.modifiable(p, x)) {
                let was_dir = m.nodes[&p].kind == K::Dir;
                m.remove(&p);
                if was_dir {
                    ops.push(Op::RemoveTree { path: p.clone() });
                    let data = bytes(rng, 1000);
                    m.add(p.clone(), K::File { size: data.len() as u64 });
                    ops.push(Op::Create { path: p, data, mode: 0o644 });
                } else {
                    ops.push(Op::Unlink { path: p.clone() });
                    m.add(p.clone(), K::Dir);
                    ops.push(Op::Mkdir { path: p.clone(), mode: 0o755 });
                    let data = bytes(rng, 500);
                    let f = p.join("inside");
                    m.add(f.clone(), K::File { size: data.len() as u64 });
                    ops.push(Op::Create { path: f, data, mode: 0o600 });
                }
            }
        }
    }
}

/// Where `p` (at or below `from`) is once `from` is moved to `to`.
fn moved_to(to: &Path, from: &Path, p: &Path) -> PathBuf {
    let rest = p.strip_prefix(from).expect("below from");
    if rest.as_os_str().is_empty() {
        to.to_path_buf()
    } else {
        to.join(rest)
    }
}

fn longest_below(m: &Model, dir: &Path) -> usize {
    let n = dir.as_os_str().len();
    m.below(dir).iter().map(|p| p.as_os_str().len() - n).max().unwrap_or(0)
}
